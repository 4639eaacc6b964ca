from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Session',
            name='token_digest',
            field=fields.CharField(null=True, unique=True, description='Digest of the opaque session token that cookie-session dialects carry (else null).', max_length=64),
        ),
    ]
