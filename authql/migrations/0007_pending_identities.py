from tortoise import migrations
from tortoise.migrations import operations as ops
from uuid import uuid4
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0006_identities')]

    initial = False

    operations = [
        ops.CreateModel(
            name='PendingIdentity',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('digest', fields.CharField(unique=True, max_length=64)),
                ('provider', fields.CharField(max_length=32)),
                ('subject', fields.CharField(max_length=255)),
                ('email', fields.CharField(null=True, max_length=320)),
                ('email_verified', fields.BooleanField(default=False)),
                ('name', fields.CharField(null=True, max_length=200)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'pending_identities', 'app': 'models', 'pk_attr': 'id', 'table_description': 'External identities waiting to be registered or linked'},
            bases=['Model'],
        ),
    ]
