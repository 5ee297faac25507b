"""The org fixture loader: derived Exchange names and clear errors for broken fixtures."""
from __future__ import annotations

import pytest

from harness.org import load_org
from harness.yamlfile import SpecError


def test_default_org_names():
    org = load_org()
    alice = org.find("alice@contoso.test")
    assert org.find("CONTOSO\\alice") is alice and org.find("alice") is alice
    assert org.find(org.legacy_dn(alice)) is alice
    assert org.personal_server(alice) == "8d3e7c1a-5b2f-4e61-9c0a-3f4d2e1b7a01@contoso.test"
    assert org.server_version_hex == "73C085D9"  # 15.0.1497 packed as Exchange does
    assert org.is_rpc_target(org.personal_server(alice)) and org.is_rpc_target("EX01")
    assert not org.is_rpc_target("ex99.contoso.test")
    assert org.find("dave").server == "EX02"


@pytest.mark.parametrize("text, line, field", [
    ("org: {name: X, domain: x.test}\nservers: [{name: EX01, fqdn: ex01.x.test}]\nmailboxes: []\nextra: 1\n",
     4, "extra"),
    ("org:\n  name: X\n  domain: 'not a domain'\nservers: []\nmailboxes: []\n", 3, "org.domain"),
    ("org: {name: X, domain: x.test}\nservers:\n  - {name: EX01, fqdn: ex01.x.test}\nmailboxes:\n"
     "  - {email: a@x.test, display_name: A, password: p, kind: robot}\n", 5, "mailboxes[0].kind"),
    ("org: [unclosed\n", 2, ""),
])
def test_broken_fixture_errors_point_at_the_line(tmp_path, text, line, field):
    path = tmp_path / "org.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_org(str(path))
    assert info.value.line == line
    assert info.value.field == field
    assert str(path) in str(info.value)
