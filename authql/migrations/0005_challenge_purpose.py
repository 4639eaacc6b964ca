from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0004_two_factor')]

    initial = False

    operations = [
        ops.AddField(
            model_name='TwoFactorChallenge',
            name='purpose',
            field=fields.CharField(default='verify', description='``verify`` (complete with a factor) or ``setup`` (policy requires 2FA and the', max_length=16),
        ),
    ]
