import io

from django.core.management import call_command


def run(name, *args, **options):
    """Runs a management command; returns (stdout, stderr) as text."""
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()
