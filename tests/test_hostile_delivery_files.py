"""Hostile project files and exports: e-mail templates that try to run code, files named outside
their folder, endpoints on cloud-metadata addresses, missing credentials, and ids that a
spreadsheet would run as formulas.

The CLI reads audiences/ and destinations/ beside its code, and other tests read the shipped
ones at the same time, so each test runs `oa` in a copy of the project (the real code, seeds and
model YAML, with audiences/ and destinations/ of its own), as a user runs it in a checkout.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.spreadsheet import neutralise
from openaudience.core.settings import PROJECT_ROOT
from openaudience.delivery.store import LOG
from openaudience.segments.engine import write_version
from tests.support.forked import run_in
from tests.support.hostile import assert_refused, table_counts

COPIED = ("openaudience", "orchestration", "connectors", "ml", "seeds", "models")
SECRET = "TOPSECRET-h1-do-not-echo"
TODAY = dt.date(2026, 6, 29)


@pytest.fixture
def project(tmp_path) -> Path:
    """A project checkout of its own: the code, seeds and models, empty audiences/ and destinations/."""
    root = tmp_path / "project"
    for item in COPIED:
        shutil.copytree(PROJECT_ROOT / item, root / item)  # with its bytecode (make test compiles it)
    for folder in ("audiences", "destinations"):
        (root / folder).mkdir()
    return root


def oa(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`oa ARGS` run from `project`, as the `oa` script runs (its `main`), on the project's code,
    in a process of its own (tests/support/forked.py)."""
    return run_in(project, {**env, "COLUMNS": "2000"}, args)


def plain_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a command that reads project files only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OA_", "PG", "DAGSTER_HOME"))}
    return {**env, "OA_HOME": str(tmp_path / "home")}


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


READERS = "name: readers\nid_type: email\nwhere:\n  tag: {name: city, is_not_null: true}\n"
PEOPLE = "name: people\nid_type: member_id\nwhere:\n  tag: {name: city, is_not_null: true}\n"


def email(name: str, body: str) -> str:
    """An e-mail destination whose line 9 and after is `body`."""
    return (f"name: {name}\naudience: readers\nchannel: email\nemail:\n  smtp_host: 127.0.0.1\n"
            "  from_address: news@shop.example\n  unsubscribe_url: 'https://shop.example/u?t={token}'\n"
            f"  unsubscribe_secret_env: OA_H1_UNSUBSCRIBE\n{body}")


# -- templates ------------------------------------------------------------------------------------
def payload(target: Path) -> str:
    return ("{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch " + str(target)
            + "') }}")


CONSTRUCTS = {  # destination name: (subject, what the refusal says)
    "set_tag": ("{% set x = 1 %}{{ x }}", "{% set %} is not allowed"),
    "import_tag": ("{% import 'm.html' as m %}", "{% import %} is not allowed"),
    "include_tag": ("{% include '/etc/passwd' %}", "{% include %} is not allowed"),
    "extends_tag": ("{% extends 'base.html' %}", "{% extends %} is not allowed"),
    "macro_tag": ("{% macro m() %}x{% endmacro %}", "{% macro %} is not allowed"),
    "dunder": ("{{ email.__class__ }}", "attribute access (.name) is not allowed"),
    "item": ("{{ email['x'] }}", "item access ([...]) is not allowed"),
    "safe_filter": ("{{ email|safe }}", "the filter 'safe' is not allowed"),
    "loop": ("{% for c in email %}{{ c }}{% endfor %}", "{% for %} is not allowed"),
    "filter_argument": ("{{ email|truncate(email) }}",
                        "the filter 'truncate' may take literal arguments only"),
    # ten of these make ten billion characters of one: refused, whatever the arguments
    "explode": ("{{ email" + "|replace('a', 'aaaaaaaaaa')" * 10 + " }}",
                "the filter 'replace' is not allowed"),
}


def test_templates_that_do_more_than_print_variables_are_refused_with_file_and_line(project, tmp_path):
    touched = tmp_path / "pwned"
    (project / "audiences" / "readers.yml").write_text(READERS)
    write(project / "destinations", {
        "evil_subject.yml": email("evil_subject", f'  text: "Hello"\n  subject: "{payload(touched)}"\n'),
        "evil_html.yml": email("evil_html", '  subject: "Hello"\n  html_file: templates/evil.html\n'),
        "templates/evil.html": f"<p>Hello</p>\n<p>{{{{ email }}}}</p>\n<p>{payload(touched)}</p>\n",
        **{f"{name}.yml": email(name, f'  text: "Hello"\n  subject: "{subject}"\n')
           for name, (subject, _) in CONSTRUCTS.items()},
    })
    done = oa(project, plain_env(tmp_path), "deliver", "validate")
    assert_refused(
        done, "evil_subject.yml:10: email.subject: template line 1: a call (...) is not allowed",
        "evil_html.yml:10: email.html_file: templates/evil.html line 3: a call (...) is not allowed",
        *(f"{name}.yml:10: email.subject: template line 1: {said}" for name, (_, said) in CONSTRUCTS.items()))
    assert not touched.exists()


def test_the_sandbox_refuses_a_payload_even_unchecked(tmp_path):
    """Rendering is the second line: the template environment is Jinja2's sandbox."""
    from jinja2.exceptions import SecurityError

    from connectors.smtp import template_environment

    touched = tmp_path / "pwned"
    for html in (False, True):
        with pytest.raises(SecurityError):
            template_environment(html).from_string(payload(touched)).render({"email": "a@b.c"})
    assert not touched.exists()


def test_variables_filters_and_if_render_and_html_escapes_values(tmp_path):
    from connectors.base import Member
    from connectors.smtp import SmtpConnector, SmtpSettings, template_problems

    subject = "{{ city|default('your city')|upper }}{% if vip == 'yes' %} VIP{% else %}!{% endif %}"
    html = "<p>{{ city|trim }} {{ email|truncate(40) }}</p><a href='{{ unsubscribe_url }}'>x</a>"
    assert template_problems(subject) == [] and template_problems(html, html=True) == []
    connector = SmtpConnector(SmtpSettings(
        host="127.0.0.1", port=25, from_address="news@shop.example", subject=subject, html=html,
        destination="d", unsubscribe_url="https://shop.example/u?t={token}", unsubscribe_secret="s"))
    message = connector.message(Member(key="k" * 32, one_id="p1", id_value="a@b.c", op="add",
                                       id_type="email", variables={"city": "<b>shanghai</b>", "vip": "yes"}))
    assert message["Subject"] == "<B>SHANGHAI</B> VIP"  # text: as it is
    assert "<p>&lt;b&gt;shanghai&lt;/b&gt; a@b.c</p>" in message.get_content()  # html: escaped


def test_a_rendered_message_larger_than_a_mail_may_be_is_refused():
    """What the allowed filters can still grow (a long value, escaping) is capped when rendering."""
    from connectors.base import Member
    from connectors.smtp import MAX_BODY_BYTES, SmtpConnector, SmtpSettings

    connector = SmtpConnector(SmtpSettings(
        host="127.0.0.1", port=25, from_address="news@shop.example", subject="Hi {{ city|e }}",
        text="{{ note|e }}", destination="d", unsubscribe_url="https://shop.example/u?t={token}",
        unsubscribe_secret="s"))

    def member(city: str, note: str) -> Member:
        return Member(key="k" * 32, one_id="p1", id_value="a@b.c", id_type="email",
                      variables={"city": city, "note": note})

    assert connector.message(member("x" * 990, "&" * 1000))["Subject"] == "Hi " + "x" * 990
    with pytest.raises(ValueError, match="the rendered subject is longer than 998 characters"):
        connector.message(member("x" * 996, "fine"))
    with pytest.raises(ValueError, match="the rendered text body is longer than 1,048,576 bytes"):
        connector.message(member("Shanghai", "&" * (MAX_BODY_BYTES // 5 + 1)))  # &amp; is 5 bytes


# -- paths and endpoints -------------------------------------------------------------------------
def test_template_files_stay_in_destinations_and_endpoints_off_metadata_addresses(project, tmp_path):
    outside = tmp_path / "secret.html"
    outside.write_text(f"<p>{SECRET}</p>\n{{{{ nope.__class__ }}}}\n")
    (project / "secret.html").write_text(f"<p>{SECRET}</p>\n")
    (project / "destinations" / "templates").mkdir()
    (project / "destinations" / "templates" / "link.html").symlink_to(outside)
    (project / "audiences" / "readers.yml").write_text(READERS)
    hook = "name: {name}\naudience: readers\nchannel: webhook\n{extra}webhook:\n  url: '{url}'\n"
    write(project / "destinations", {
        "tpl_absolute.yml": email("tpl_absolute", f'  subject: "Hi"\n  html_file: {outside}\n'),
        "tpl_climbs.yml": email("tpl_climbs", '  subject: "Hi"\n  html_file: ../secret.html\n'),
        "tpl_link.yml": email("tpl_link", '  subject: "Hi"\n  text_file: templates/link.html\n'),
        "smtp_metadata.yml": email("smtp_metadata", '  subject: "Hi"\n  text: "Hi"\n').replace(
            "smtp_host: 127.0.0.1", "smtp_host: metadata.google.internal"),
        "hook_metadata.yml": hook.format(name="hook_metadata", extra="", url="http://169.254.169.254/latest/"),
        "hook_decimal.yml": hook.format(name="hook_decimal", extra="", url="http://2852039166/"),
        "hook_link_local.yml": hook.format(name="hook_link_local", extra="", url="http://[fe80::1]:8080/"),
        "hook_file.yml": hook.format(name="hook_file", extra="", url="file:///etc/passwd"),
        "hook_allowed.yml": hook.format(name="hook_allowed", extra="allow_private_network: true\n",
                                        url="http://169.254.169.254/"),
        "hook_loopback.yml": hook.format(name="hook_loopback", extra="", url="http://127.0.0.1:9/"),
    })
    done = oa(project, plain_env(tmp_path), "deliver", "validate")
    out = assert_refused(
        done,
        f"tpl_absolute.yml:10: email.html_file: template file {outside} is not relative",
        "tpl_climbs.yml:10: email.html_file: template file ../secret.html climbs out with '..'",
        "tpl_link.yml:10: email.text_file: template file templates/link.html is a symbolic link",
        "smtp_metadata.yml:5: email.smtp_host: the host metadata.google.internal is a cloud metadata service",
        "hook_metadata.yml:5: webhook.url: the host 169.254.169.254 is a cloud metadata service",
        "hook_decimal.yml:5: webhook.url: the host 2852039166 is a cloud metadata service",
        "hook_link_local.yml:5: webhook.url: the host fe80::1 is a link-local address",
        "hook_file.yml:4: webhook: url 'file:///etc/passwd' must start with http://",
        "allow_private_network: true")
    assert SECRET not in out
    assert "hook_allowed" not in out and "hook_loopback" not in out


def test_upload_files_stay_in_audiences_and_bad_lines_are_shown_short_and_escaped(project, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text(f"13800138000\n{SECRET}\n")
    (project / "secret.txt").write_text(f"13800138000\n{SECRET}\n")
    uploads = project / "audiences" / "uploads"
    uploads.mkdir()
    (uploads / "link.txt").symlink_to(outside)
    hostile_line = "[bold red]<script>alert(1)</script>" + "A" * 300
    (uploads / "bad.txt").write_text(f"13800138000\n{hostile_line}\n")
    audience = "name: {name}\nid_type: mobile\nwhere:\n  upload: {{file: '{file}', id_type: mobile}}\n"
    write(project / "audiences", {
        "up_absolute.yml": audience.format(name="up_absolute", file=outside),
        "up_climbs.yml": audience.format(name="up_climbs", file="../secret.txt"),
        "up_link.yml": audience.format(name="up_link", file="uploads/link.txt"),
        "up_bad_line.yml": audience.format(name="up_bad_line", file="uploads/bad.txt"),
    })
    done = oa(project, plain_env(tmp_path), "audience", "validate")
    out = assert_refused(
        done,
        f"up_absolute.yml:4: where.upload.file: upload file {outside} is not relative",
        "up_climbs.yml:4: where.upload.file: upload file ../secret.txt climbs out with '..'",
        "up_link.yml:4: where.upload.file: upload file uploads/link.txt is a symbolic link",
        "up_bad_line.yml:4: where.upload.file: '\\x5bbold red]\\x3cscript>alert(1)\\x3c/script>AAAA",
        "... is not a valid mobile; fix or remove the line (uploads/bad.txt:2)")
    assert SECRET not in out
    assert "<script>" not in out and "A" * 30 not in out


def test_an_upload_that_is_a_folder_a_pipe_or_no_file_name_is_refused_at_its_line(project, tmp_path):
    uploads = project / "audiences" / "uploads"
    uploads.mkdir()
    os.mkfifo(uploads / "pipe.txt")  # reading it would wait for a writer forever
    audience = "name: {name}\nid_type: mobile\nwhere:\n  upload: {{file: {file}, id_type: mobile}}\n"
    write(project / "audiences", {
        "up_folder.yml": audience.format(name="up_folder", file="uploads"),
        "up_pipe.yml": audience.format(name="up_pipe", file="uploads/pipe.txt"),
        "up_nul.yml": audience.format(name="up_nul", file='"uploads/a\\0b.txt"'),
    })
    done = oa(project, plain_env(tmp_path), "audience", "validate")
    assert_refused(
        done,
        "up_folder.yml:4: where.upload.file: upload file uploads is a folder; name a file inside audiences/",
        "up_pipe.yml:4: where.upload.file: upload file uploads/pipe.txt is not a regular file",
        "up_nul.yml:4: where.upload.file: upload file 'uploads/a\\x00b.txt' is not a usable file name")


# -- credentials before planning ------------------------------------------------------------------
def webhook(name: str, endpoint: str, secret_env: str = "OA_H1_SECRET") -> str:
    return (f"name: {name}\naudience: people\nchannel: webhook\nwebhook:\n  {endpoint}\n"
            f"  secret_env: {secret_env}\n")


def test_missing_or_malformed_credentials_are_refused_before_a_run_is_planned(project, target):
    """Each of these used to plan a run that then stopped, its rows left pending."""
    (project / "audiences" / "people.yml").write_text(PEOPLE)
    write(project / "destinations", {
        "missing_secret.yml": webhook("missing_secret", "url: 'http://127.0.0.1:9/hook'", "OA_H1_UNSET"),
        "file_url.yml": webhook("file_url", "url_env: OA_H1_FILE_URL"),
        "metadata_url.yml": webhook("metadata_url", "url_env: OA_H1_METADATA_URL"),
        "header_break.yml": webhook("header_break", "url: 'http://127.0.0.1:9/hook'", "OA_H1_BROKEN"),
        "short_key.yml": "name: short_key\naudience: people\nchannel: file\nid_form: aes\n"
                         "aes_key_env: OA_H1_AES_KEY\n",
    })
    wh = target.warehouse
    write_version(wh, "people", "member_id", pa.table({"one_id": ["p1", "p2"], "id_value": ["m1", "m2"]}),
                  TODAY, "test")
    before = table_counts(wh)
    env = {**target.env, "OA_H1_SECRET": "s3cret", "OA_H1_FILE_URL": "file:///etc/passwd",
           "OA_H1_METADATA_URL": "http://169.254.169.254/latest/meta-data/iam",
           "OA_H1_BROKEN": "token\r\nX-Injected: 1", "OA_H1_AES_KEY": "short"}
    done = oa(project, env, "deliver", "missing_secret", "file_url", "metadata_url", "header_break",
              "short_key")
    out = assert_refused(
        done,
        "missing_secret.yml:6: webhook.secret_env: the environment variable OA_H1_UNSET is not set",
        "file_url.yml:5: webhook.url_env: the environment variable OA_H1_FILE_URL: it must start with "
        "http:// or https:// (it has file:)",
        "metadata_url.yml:5: webhook.url_env: the environment variable OA_H1_METADATA_URL: the host "
        "169.254.169.254 is a cloud metadata service",
        "header_break.yml:6: webhook.secret_env: the environment variable OA_H1_BROKEN holds a control "
        "character",
        "short_key.yml:5: aes_key_env: the environment variable OA_H1_AES_KEY: the AES key must be "
        "exactly 16")
    assert "/etc/passwd" not in out and "meta-data/iam" not in out and "X-Injected" not in out
    assert table_counts(wh) == before  # no run, no log row, not even the delivery tables


# -- exports --------------------------------------------------------------------------------------
HOSTILE_IDS = {  # as stored: as a spreadsheet-safe CSV writes it
    '=HYPERLINK("http://evil.example","x")': '\'=HYPERLINK("http://evil.example","x")',
    "+1+cmd|' /C calc'!A0": "'+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0": "'-2+3+cmd|' /C calc'!A0",
    "@SUM(A1:A9)": "'@SUM(A1:A9)",
    "\t=1+1": "'\t=1+1",
    "\r+1+2": "'\r+1+2",
    "-3.5": "-3.5",                       # a number, read as one: left alone
    "+8613800138000": "+8613800138000",
    "plain-id": "plain-id",
}


def read_column(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return [row[-1] for row in list(csv.reader(f))[1:]]


def test_exports_for_people_neutralise_formulas_and_machines_can_opt_out(project, target, tmp_path):
    (project / "audiences" / "people.yml").write_text(PEOPLE)
    out = tmp_path / "out"
    file_destination = "name: {name}\naudience: people\nchannel: file\nfile: {{folder: '{out}', {extra}}}\n"
    write(project / "destinations", {
        "sheet.yml": file_destination.format(name="sheet", out=out, extra="format: csv"),
        "machine.yml": file_destination.format(name="machine", out=out,
                                               extra="format: csv, spreadsheet_safe: false"),
        "typed.yml": file_destination.format(name="typed", out=out, extra="format: parquet"),
    })
    ids = list(HOSTILE_IDS)
    write_version(target.warehouse, "people", "member_id",
                  pa.table({"one_id": [f"p{i}" for i in range(len(ids))], "id_value": ids}), TODAY, "test")

    done = oa(project, target.env, "audience", "export", "people", "--out", str(tmp_path / "people.csv"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(read_column(tmp_path / "people.csv")) == sorted(HOSTILE_IDS.values())
    done = oa(project, target.env, "audience", "export", "people", "--raw",
              "--out", str(tmp_path / "raw.csv"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(read_column(tmp_path / "raw.csv")) == sorted(HOSTILE_IDS)

    done = oa(project, {**target.env, "OA_EXPORT_ROOTS": str(out)}, "deliver", "--all")
    assert done.returncode == 0, done.stdout + done.stderr
    # the file channel sends normalised ids: the tab and the carriage return are trimmed
    normalised = {k.strip(): (v if k.strip() == k else neutralise(k.strip())) for k, v in HOSTILE_IDS.items()}

    def written(name: str) -> tuple[list[str], dict]:
        run = json.loads((out / name / "latest.json").read_text())
        manifest = json.loads((out / name / run["manifest"]).read_text())
        parts = [out / name / run["run_id"] / p for p in manifest["parts"]]
        if manifest["format"] == "parquet":
            return [v for p in parts for v in pq.read_table(p).column("id").to_pylist()], manifest
        return [v for p in parts for v in read_column(p)], manifest

    sheet, manifest = written("sheet")
    assert sorted(sheet) == sorted(normalised.values()) and manifest["spreadsheet_safe"] is True
    machine, manifest = written("machine")
    assert sorted(machine) == sorted(normalised) and manifest["spreadsheet_safe"] is False
    typed, _ = written("typed")
    assert sorted(typed) == sorted(normalised)


def test_only_text_cells_are_neutralised():
    assert [neutralise(v) for v in (-3.5, -3, Decimal("-3.50"), None, True)] == [-3.5, -3, Decimal("-3.50"),
                                                                                None, True]
    assert [neutralise(v) for v in ("-3.5", "-1e5", "=1", "", "a=1")] == ["-3.5", "'-1e5", "'=1", "", "a=1"]


# -- where exports may be written -----------------------------------------------------------------
def sms(name: str, folder: str) -> str:
    return (f"name: {name}\naudience: phones\nchannel: sms\nsms:\n  base_url: 'http://127.0.0.1:9/'\n"
            "  platform_name: acme\n  sign_name: Shop\n  template_code: T1\n"
            f"  phone_files: {{folder: '{folder}', base_url: 'http://127.0.0.1:9/files'}}\n")


def test_export_folders_stay_in_oa_home_unless_the_environment_allows_more(project, tmp_path):
    elsewhere, allowed = tmp_path / "elsewhere", tmp_path / "allowed"
    home = tmp_path / "home"
    (project / "audiences" / "people.yml").write_text(PEOPLE)
    (project / "audiences" / "phones.yml").write_text(PEOPLE.replace("people", "phones").replace(
        "member_id", "mobile"))
    file_destination = "name: {name}\naudience: people\nchannel: file\nfile:\n  folder: '{folder}'\n"
    write(project / "destinations", {
        "out_absolute.yml": file_destination.format(name="out_absolute", folder=elsewhere),
        "out_climbs.yml": file_destination.format(name="out_climbs", folder="exports/../../etc"),
        "out_sms.yml": sms("out_sms", "/etc/cron.d"),
        "in_home.yml": file_destination.format(name="in_home", folder=home / "exports"),
        "in_roots.yml": file_destination.format(name="in_roots", folder=allowed / "crm"),
        "relative.yml": file_destination.format(name="relative", folder="exports/crm"),
    })
    env = {**plain_env(tmp_path), "OA_EXPORT_ROOTS": os.pathsep.join([str(allowed), "relative/root"])}
    out = assert_refused(
        oa(project, env, "deliver", "validate"),
        f"out_absolute.yml:5: file.folder: the folder {elsewhere} is outside OA_HOME ({home.resolve()})",
        "OA_EXPORT_ROOTS (absolute folders separated by",
        "OA_EXPORT_ROOTS has 'relative/root', which is not an absolute folder",
        "out_climbs.yml:5: file.folder: folder exports/../../etc climbs out with '..'",
        "out_sms.yml:9: sms.phone_files.folder: the folder /etc/cron.d is outside OA_HOME")
    assert "in_home" not in out and "in_roots" not in out and "relative.yml" not in out
    env["OA_EXPORT_ROOTS"] = str(elsewhere)
    assert "out_absolute" not in oa(project, env, "deliver", "validate").stdout


def test_a_symbolic_link_in_oa_home_leads_no_export_outside_it(project, target, tmp_path):
    home, elsewhere = Path(target.env["OA_HOME"]), tmp_path / "elsewhere"
    home.mkdir(parents=True, exist_ok=True)
    elsewhere.mkdir()
    (home / "exports").symlink_to(elsewhere)  # validated as `exports`, under OA_HOME
    (project / "audiences" / "people.yml").write_text(PEOPLE)
    write(project / "destinations", {"linked.yml": "name: linked\naudience: people\nchannel: file\n"})
    write_version(target.warehouse, "people", "member_id",
                  pa.table({"one_id": ["p1", "p2"], "id_value": ["m1", "m2"]}), TODAY, "test")
    assert oa(project, target.env, "deliver", "validate").returncode == 0
    assert_refused(oa(project, target.env, "deliver", "linked"),
                   f"destination linked: the folder {home / 'exports' / 'linked'} (which leads to "
                   f"{elsewhere.resolve() / 'linked'}) is outside OA_HOME")
    assert list(elsewhere.iterdir()) == []
    done = oa(project, {**target.env, "OA_EXPORT_ROOTS": str(elsewhere)}, "deliver", "linked")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (elsewhere / "linked" / "latest.json").exists()


# -- replies and redirects ------------------------------------------------------------------------
class Peer:
    """A real HTTP server on loopback answering every request alike; `hits` are the paths asked."""

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.hits: list[str] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.do_GET()

            def do_GET(self) -> None:
                peer.hits.append(self.path)
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_webhook_follows_no_redirect_and_quotes_no_reply_body(project, target):
    """A receiver the file may call answers 307 to a place it may not (here a trap standing in for
    a metadata service): the request is refused, not followed, and no reply body is echoed."""
    trap = Peer(200, f"{SECRET} role credentials".encode())
    hop = Peer(307, b"moved", {"Location": trap.url + "/latest/meta-data/iam/security-credentials/"})
    chatty = Peer(400, ("[bold red]<script>alert(1)</script>" + "A" * 300 + SECRET).encode())
    (project / "audiences" / "people.yml").write_text(PEOPLE)
    write(project / "destinations", {"hop.yml": webhook("hop", f"url: '{hop.url}/hook'"),
                                     "chatty.yml": webhook("chatty", f"url: '{chatty.url}/hook'")})
    write_version(target.warehouse, "people", "member_id",
                  pa.table({"one_id": ["p1", "p2"], "id_value": ["m1", "m2"]}), TODAY, "test")
    env = {**target.env, "OA_H1_SECRET": "s3cret"}
    try:
        done = oa(project, env, "deliver", "hop", "chatty")
        status = oa(project, env, "deliver", "status")
    finally:
        for peer in (trap, hop, chatty):
            peer.close()
    out = done.stdout + done.stderr + status.stdout + status.stderr
    assert "Traceback" not in out, out[-3000:]
    assert trap.hits == [] and hop.hits and chatty.hits
    rows = target.warehouse.query(f"select destination, status, error from {LOG} order by destination")
    assert [(d, s) for d, s, _ in rows] == [("chatty", "failed")] * 2 + [("hop", "failed")] * 2, (out, rows)
    assert all("HTTP 307, a redirect, which is not followed" in e for d, _, e in rows if d == "hop")
    assert all("HTTP 400" in e and "\\x3cscript>" in e for d, _, e in rows if d == "chatty")
    for text in (out, *(e for _, _, e in rows)):
        assert SECRET not in text and "<script>" not in text and "A" * 100 not in text


def test_a_host_name_resolving_to_a_metadata_address_is_refused_when_connecting(monkeypatch, tmp_path):
    """The file's check sees a name; the connection sees where it leads. Nothing is sent there."""
    from connectors.base import Member
    from connectors.http import GuardedAdapter
    from connectors.webhook import WebhookConnector, WebhookSettings
    from openaudience.delivery.channels import connector_for
    from openaudience.delivery.spec import Destination

    resolve, asked = socket.getaddrinfo, []

    def resolver(host, *args, **kwargs):  # the attacker's DNS: the name points at the metadata service
        asked.append(host)
        return resolve("169.254.169.254" if host == "crm.attacker.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    hook = WebhookConnector(WebhookSettings(url="http://crm.attacker.test/hook", timeout_s=1))
    member = Member(key="k" * 32, one_id="p1", id_type="member_id", id_value="m1")
    try:
        [outcome] = hook.deliver([member])
    finally:
        hook.close()
    assert (outcome.ok, outcome.code) == (False, "forbidden_address")
    assert "crm.attacker.test resolves to 169.254.169.254, a cloud metadata service" in outcome.message
    assert asked == ["crm.attacker.test"]  # refused before urllib3 resolved it to connect

    # allow_private_network reaches the connector, whose connections are then not checked
    d = Destination.model_validate({"name": "crm", "audience": "people", "channel": "webhook",
                                    "allow_private_network": True,
                                    "webhook": {"url": "http://crm.attacker.test/hook"}})
    allowed = connector_for(d, {"run_id": "r1", "audience": "people", "audience_version": 1},
                            tmp_path, tmp_path)
    allowed.open()
    try:
        adapter = allowed.session.get_adapter("http://crm.attacker.test/hook")
        assert isinstance(adapter, GuardedAdapter) and adapter.allow_private_network is True
    finally:
        allowed.close()


JOURNEY_HOOK = ("name: hook\naudience: people\nchannel: webhook\nschedule: journey\n"
                "webhook: {url_env: OA_TEST_HOOK_URL}\n")


def test_journey_files_are_refused_at_their_line_and_a_copy_stays_in_journeys(project, tmp_path):
    env = plain_env(tmp_path)
    write(project, {"audiences/people.yml": PEOPLE, "destinations/hook.yml": JOURNEY_HOOK,
                    "journeys/j.yml": "name: j  # the original\ntrigger: {audience: people}\n"
                                      "steps:\n  - send: {destination: hook}\n"})
    done = oa(project, env, "journey", "validate")
    assert done.returncode == 0 and "1 journey file(s) valid" in done.stdout, done.stderr
    from tests.support.hostile import run_main

    for bad in ("../evil", "Evil", "x" * 81):  # refused before anything is read or written
        done = run_main(["journey", "copy", "cart_abandon_reminder", bad], env)
        assert done.returncode == 2 and "is not a journey name" in done.stderr, (bad, done.stderr)
    done = oa(project, env, "journey", "copy", "j", "j2")
    assert done.returncode == 0, done.stderr
    assert (project / "journeys/j2.yml").read_text().startswith("name: j2  # the original\n")
    done = oa(project, env, "journey", "copy", "j", "j2")
    assert done.returncode == 2 and "exists already" in done.stderr
    assert sorted(p.name for p in (project / "journeys").iterdir()) == ["j.yml", "j2.yml"]
    # an alias bomb and a step of the wrong shape: refused with the line, nothing else breaks
    bomb = "name: bomb\nx: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"x{i}: &a{i} [{', '.join(['*a' if i == 0 else f'*a{i - 1}'] * 10)}]\n" for i in range(6))
    write(project, {"journeys/bomb.yml": bomb,
                    "journeys/shape.yml": "name: shape\ntrigger: {audience: people}\nsteps:\n  - 42\n"})
    done = oa(project, env, "journey", "validate")
    assert done.returncode == 2, done.stdout
    assert "bomb.yml:" in done.stderr and "too many aliases" in done.stderr, done.stderr
    assert "shape.yml:4: steps[0]" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    done = oa(project, env, "journey", "list")
    assert done.returncode == 0 and "incomplete" in done.stdout and "not_started" in done.stdout, done.stdout
