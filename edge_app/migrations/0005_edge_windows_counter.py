from django.db import migrations, models


def count_once(apps, schema_editor):
    """An edge that already holds tuples starts its counter at what it holds (one count, here, never again)."""
    EdgeStatus = apps.get_model("edge_app", "EdgeStatus")
    WindowAggregate = apps.get_model("edge_app", "WindowAggregate")
    if EdgeStatus.objects.count() == 1:  # one edge per database: its tuples are all this edge's
        EdgeStatus.objects.update(windows=WindowAggregate.objects.count())


class Migration(migrations.Migration):

    dependencies = [
        ('edge_app', '0004_outage'),
    ]

    operations = [
        migrations.AddField(
            model_name='edgestatus',
            name='windows',
            field=models.PositiveBigIntegerField(default=0, help_text='tuples the ingest stored (a replayed window already stored is not counted again)'),
        ),
        migrations.RunPython(count_once, migrations.RunPython.noop),
    ]
