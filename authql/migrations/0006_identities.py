from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0005_challenge_purpose')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Identity',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='identities', on_delete=OnDelete.CASCADE)),
                ('provider', fields.CharField(max_length=32)),
                ('subject', fields.CharField(max_length=255)),
                ('email', fields.CharField(null=True, max_length=320)),
                ('email_verified', fields.BooleanField(default=False)),
                ('linked_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'identities', 'app': 'models', 'unique_together': (('provider', 'subject'),), 'pk_attr': 'id', 'table_description': 'External identities keyed by provider and subject'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OAuthState',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('digest', fields.CharField(unique=True, max_length=64)),
                ('provider', fields.CharField(max_length=32)),
                ('code_verifier', fields.CharField(max_length=128)),
                ('nonce', fields.CharField(max_length=128)),
                ('redirect_uri', fields.CharField(max_length=2048)),
                ('return_url', fields.CharField(null=True, max_length=2048)),
                ('link_user', fields.ForeignKeyField('models.User', source_field='link_user_id', null=True, db_constraint=True, to_field='id', related_name='oauth_states', on_delete=OnDelete.CASCADE)),
                ('binding_digest', fields.CharField(max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('expires_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'oauth_states', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Authorization-code flows in flight'},
            bases=['Model'],
        ),
    ]
