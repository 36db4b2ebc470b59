from django.db import migrations

PURPOSES = [
    ("analytics", "Analytics", "Storing behavioral events (page views, clicks, purchases) to understand "
     "and improve the shop.", "legitimate_interest", "opt_out", "tracking"),
    ("personalization", "Personalization", "Choosing content and recommendations from your "
     "behavior.", "legitimate_interest", "opt_out", "personalization"),
    ("marketing", "Marketing", "Using your profile for marketing campaigns and audiences.",
     "consent", "opt_in", "activation"),
]

COMPLIANCE_PERMS = [
    ("consent", "datasubjectrequest", ["view", "add", "change"]),
    ("consent", "consentrecord", ["view"]),
    ("consent", "purpose", ["view"]),
    ("cdp", "auditevent", ["view"]),
    ("profiles", "profile", ["view"]),
    ("profiles", "identity", ["view"]),
]


def forwards(apps, schema_editor):
    Purpose = apps.get_model("consent", "Purpose")
    for code, name, description, basis, default, gates in PURPOSES:
        Purpose.objects.update_or_create(
            code=code,
            defaults={"name": name, "description": description, "legal_basis": basis,
                      "default": default, "gates": gates},
        )
    # Permissions exist only after post_migrate; create the ones we need now.
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Compliance")
    for app, model, actions in COMPLIANCE_PERMS:
        for action in actions:
            perm = Permission.objects.get(content_type__app_label=app, codename=f"{action}_{model}")
            group.permissions.add(perm)


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0001_initial"),
        ("cdp", "0001_initial"),
        ("profiles", "0002_alter_identity_kind_erasedidentity"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
