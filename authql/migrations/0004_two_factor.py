from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0003_one_time_tokens')]

    initial = False

    operations = [
        ops.CreateModel(
            name='BackupCode',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='backup_codes', on_delete=OnDelete.CASCADE)),
                ('digest', fields.CharField(unique=True, max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'backup_codes', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Single-use 2FA backup codes stored as digests'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='TotpCredential',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('user', fields.OneToOneField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='totp', on_delete=OnDelete.CASCADE)),
                ('secret_encrypted', fields.CharField(null=True, max_length=255)),
                ('pending_encrypted', fields.CharField(null=True, max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('confirmed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_step', fields.BigIntField(default=0)),
            ],
            options={'table': 'totp_credentials', 'app': 'models', 'pk_attr': 'id', 'table_description': 'TOTP secrets (encrypted) and the last accepted step'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='TwoFactorChallenge',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='challenges', on_delete=OnDelete.CASCADE)),
                ('digest', fields.CharField(unique=True, max_length=64)),
                ('method', fields.CharField(max_length=64)),
                ('remember', fields.BooleanField(default=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('attempts', fields.IntField(default=0)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'two_factor_challenges', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Pending second-factor sign-ins'},
            bases=['Model'],
        ),
    ]
