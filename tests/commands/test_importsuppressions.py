import pytest
from django.core.management.base import CommandError

from audit.models import AuditEvent
from suppression import services
from suppression.models import Suppression
from tests.commands.helpers import run

pytestmark = pytest.mark.django_db


def counts(out):
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return int(lines["created"]), int(lines["already present"]), int(lines["invalid"])


def test_csv_with_valid_duplicate_existing_and_invalid_values(workspace, other_workspace, tmp_path):
    services.suppress(workspace=workspace, value="known@acme.com", reason="manual")
    services.suppress(workspace=other_workspace, value="elsewhere@acme.com", reason="manual")
    path = tmp_path / "list.csv"
    path.write_text(
        "name,email,company\n"
        "Jane,jane@acme.com,Acme\n"
        "Jane again,JANE@Acme.com ,Acme\n"  # duplicate of the line above
        "Known,known@acme.com,Acme\n"  # already suppressed
        "Elsewhere,elsewhere@acme.com,Acme\n"  # suppressed only in another workspace
        "Whole domain,@globex.com,Globex\n"
        "Broken,not an address,?\n"
        "Also broken,jane@,?\n"
        ",,\n",
        encoding="utf-8",
    )
    out, err = run("importsuppressions", workspace.slug, str(path), "--reason", "dnc")
    assert counts(out) == (3, 1, 2)
    assert "not an address" in out and "jane@" in out
    assert "Importing" in err
    values = set(Suppression.objects.for_workspace(workspace).values_list("value", flat=True))
    assert values == {"known@acme.com", "jane@acme.com", "elsewhere@acme.com", "@globex.com"}
    entry = Suppression.objects.get(workspace=workspace, value="jane@acme.com")
    assert (entry.reason, entry.source, entry.created_by) == ("dnc", "import:list.csv", "command:importsuppressions")
    assert services.is_suppressed(workspace, "anyone@globex.com")
    event = AuditEvent.objects.get(workspace=workspace, action="suppression.imported")
    assert event.actor_label == "command:importsuppressions"
    assert (event.after["created"], event.after["existing"], event.after["invalid"]) == (3, 1, 2)


def test_one_value_per_line_with_bom_and_crlf(workspace, tmp_path):
    path = tmp_path / "dnc.txt"
    path.write_bytes("\ufeffa@example.com\r\n\r\nb@example.com\r\n@example.org\r\nnope\r\n".encode())
    out, _ = run("importsuppressions", workspace.slug, str(path))
    assert counts(out) == (3, 0, 1)
    assert set(Suppression.objects.values_list("reason", flat=True)) == {"import"}
    out, _ = run("importsuppressions", workspace.slug, str(path))
    assert counts(out) == (0, 3, 1)


def test_a_failing_import_leaves_nothing_behind(workspace, tmp_path, monkeypatch):
    path = tmp_path / "list.txt"
    path.write_text("\n".join(f"person{i}@acme.com" for i in range(50)))
    before = AuditEvent.objects.count()

    def broken_record(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services.audit, "record", broken_record)
    with pytest.raises(RuntimeError):
        run("importsuppressions", workspace.slug, str(path))
    monkeypatch.undo()
    assert not Suppression.objects.exists()
    assert AuditEvent.objects.count() == before


def test_refusals(workspace, tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        run("importsuppressions", workspace.slug, str(tmp_path / "missing.csv"))
    path = tmp_path / "ok.txt"
    path.write_text("a@example.com\n")
    with pytest.raises(CommandError):
        run("importsuppressions", workspace.slug, str(path), "--reason", "because")
    with pytest.raises(CommandError, match="No workspace"):
        run("importsuppressions", "nowhere", str(path))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("jos\xe9@example.com\n".encode("latin-1"))
    with pytest.raises(CommandError, match="UTF-8"):
        run("importsuppressions", workspace.slug, str(latin))
    assert not Suppression.objects.exists()
