"""keel validate / apply / get, end to end (subprocess only)."""
import os
import pathlib
import shutil
import subprocess

KEEL = os.environ.get("KEEL_BIN", "build/keel")
SEEDS = pathlib.Path(__file__).resolve().parents[2] / "examples" / "seeds"


def keel(*args, cwd=None):
    return subprocess.run([os.path.abspath(KEEL) if cwd else KEEL, *map(str, args)],
                          capture_output=True, text=True, timeout=30, cwd=cwd)


def seed_files():
    return sorted(SEEDS.glob("*.yaml"))


def test_every_seed_validates_clean():
    assert seed_files()
    for f in seed_files():
        r = keel("validate", f)
        assert r.returncode == 0, (f, r.stderr)
        assert "error:" not in r.stderr, r.stderr
    # the overlay alone names a handler defined in its base: as Mixer does (mixer-config.md
    # §4.3) the action is dropped with a warning, not refused
    r = keel("validate", SEEDS / "001-newlog-details-only.yaml")
    assert 'warning: handler "newhandler.stdio" not found' in r.stderr
    assert "action dropped" in r.stderr


def test_overlay_seed_validates_with_its_base(tmp_path):
    d = tmp_path / "keel.d"
    assert keel("apply", "-f", SEEDS / "001-newlog-user.yaml", "--config-dir", d).returncode == 0
    r = keel("apply", "-f", SEEDS / "001-newlog-details-only.yaml", "--config-dir", d)
    assert r.returncode == 0, r.stderr
    r = keel("validate", d)
    assert r.returncode == 0, r.stderr


def test_validate_errors_exit_1_with_positions(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text('apiVersion: "config.istio.io/v1alpha2"\nkind: metric\nmetadata:\n  name: m\n'
                 '  namespace: istio-system\nspec:\n  valu: "1"\n  value: response.code | "x"\n'
                 '---\napiVersion: v1\nkind: Frobnicator\nmetadata: {name: x}\n')
    r = keel("validate", f)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert f"{f}:7:3: error: unknown field \"valu\" in metric spec" in lines
    assert any(l.startswith(f"{f}:8:26: error: invalid expression: type mismatch") for l in lines), lines
    assert f"{f}:11:7: warning: unknown kind \"Frobnicator\" (apiVersion v1), ignored" in lines


def test_validate_warnings_only_exit_0(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("apiVersion: v1\nkind: Frobnicator\nmetadata: {name: x}\n")
    r = keel("validate", f)
    assert r.returncode == 0
    assert "warning:" in r.stderr


def test_validate_directory_and_missing_path(tmp_path):
    shutil.copy(SEEDS / "000-newlog-stdio.yaml", tmp_path / "a.yaml")
    shutil.copy(SEEDS / "003-service-port-naming.yml" if False else SEEDS / "003-service-port-naming.yaml",
                tmp_path / "b.yml")
    (tmp_path / "ignored.txt").write_text("not yaml: [")
    assert keel("validate", tmp_path).returncode == 0
    assert keel("validate", tmp_path / "nope").returncode == 1


def test_apply_replaces_same_name_resource_atomically(tmp_path):
    d = tmp_path / "keel.d"
    r = keel("apply", "-f", SEEDS / "001-newlog-user.yaml", "--config-dir", d)
    assert r.returncode == 0, r.stderr
    assert "logentry/newlog (namespace istio-system) created" in r.stdout
    r = keel("apply", "-f", SEEDS / "001-newlog-details-only.yaml", "--config-dir", d)
    assert r.returncode == 0, r.stderr
    assert "logentry/newlog (namespace istio-system) configured" in r.stdout
    assert "rule/newlogstdio (namespace istio-system) configured" in r.stdout
    old = (d / "001-newlog-user.yaml").read_text()
    assert "kind: stdio" in old and "kind: logentry" not in old and "kind: rule" not in old
    new = (d / "001-newlog-details-only.yaml").read_text()
    assert "destination.service.name==\"details\"" in new
    assert sorted(p.name for p in d.iterdir()) == ["001-newlog-details-only.yaml", "001-newlog-user.yaml"]
    r = keel("get", "logentry", "--config-dir", d)
    assert "newlog" in r.stdout and "variables=2" in r.stdout
    r = keel("get", "rules", "-n", "istio-system", "--config-dir", d)
    assert "destination.service.name" in r.stdout


def test_apply_invalid_writes_nothing(tmp_path):
    d = tmp_path / "keel.d"
    assert keel("apply", "-f", SEEDS / "000-newlog-stdio.yaml", "--config-dir", d).returncode == 0
    before = {p.name: p.read_text() for p in d.iterdir()}
    bad = tmp_path / "bad.yaml"
    bad.write_text('apiVersion: "config.istio.io/v1alpha2"\nkind: rule\nmetadata:\n  name: newlogstdio\n'
                   '  namespace: istio-system\nspec:\n  match: response.code | "x"\n  actions:\n'
                   '  - handler: newhandler.stdio\n    instances: [newlog.logentry]\n')
    r = keel("apply", "-f", bad, "--config-dir", d)
    assert r.returncode == 1
    assert f"{bad}:7:26: error: invalid expression: type mismatch" in r.stderr
    assert {p.name: p.read_text() for p in d.iterdir()} == before


def test_apply_default_dir_and_get_table(tmp_path):
    r = keel("apply", "-f", SEEDS / "003-service-port-naming.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "keel.d" / "003-service-port-naming.yaml").exists()
    r = keel("get", "svc", cwd=tmp_path)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "APIVERSION", "DETAILS"]
    assert lines[1].split() == ["default", "nginx", "v1", "http:80->80/HTTP"]
    r = keel("get", "all", "-n", "nosuch", cwd=tmp_path)
    assert r.returncode == 0 and "No resources found" in r.stderr
