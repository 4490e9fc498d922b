"""keel eval: output and exit codes (0 ok, 1 evaluation error, 2 parse/type error)."""
import json
import os
import subprocess

KEEL = os.environ.get("KEEL_BIN", "build/keel")


def run(*args):
    p = subprocess.run([KEEL, "eval", *args], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def test_seed_expression_with_map_entry():
    rc, out, err = run("--attr", "source.labels[app]=curl",
                       'source.labels["app"] | source.workload.name | "unknown"')
    assert (rc, out, err) == (0, '"curl"\n', "")


def test_fallback_when_absent():
    rc, out, _ = run('source.labels["app"] | source.workload.name | "unknown"')
    assert (rc, out) == (0, '"unknown"\n')


def test_typed_attrs_and_json_forms():
    assert run("--attr", "response.code=200", "response.code")[:2] == (0, "200\n")
    assert run("--attr", "response.duration=157.830203ms", "response.duration")[:2] == (0, '"157.830203ms"\n')
    assert run("--attr", "request.time=2018-12-28T11:53:10.082342Z", "request.time")[:2] == \
        (0, '"2018-12-28T11:53:10.082342Z"\n')
    assert run("--attr", "source.ip=172.17.0.14", "source.ip")[:2] == (0, '"172.17.0.14"\n')
    assert run("1.5 <= 2.0")[:2] == (0, "true\n")
    rc, out, _ = run("--attr", "source.labels[b]=2", "--attr", "source.labels[a]=1", "source.labels")
    assert rc == 0 and json.loads(out) == {"a": "1", "b": "2"}


def test_cel_dialect():
    rc, out, _ = run("--cel", "--attr", "request.method=GET", "--attr", "request.url_path=/healthz",
                     "request.method == 'GET' && request.url_path == '/healthz'")
    assert (rc, out) == (0, "true\n")
    # single-quoted multi-character strings are CEL only
    rc, _, err = run("request.method == 'GET'")
    assert rc == 2 and err.startswith("error: col 19: ") and "illegal rune literal" in err


def test_attrs_file(tmp_path):
    f = tmp_path / "attrs.json"
    f.write_text(json.dumps({
        "source.labels": {"app": "productpage", "version": "v1"},
        "response.code": 503,
        "connection.mtls": True,
        "filter_state": {"wasm.istio_operationId": "GetBook"},
    }))
    assert run("--attrs", str(f), 'source.labels["version"]')[:2] == (0, '"v1"\n')
    assert run("--attrs", str(f), "response.code >= 500 && connection.mtls")[:2] == (0, "true\n")
    assert run("--cel", "--attrs", str(f), "filter_state['wasm.istio_operationId']")[:2] == (0, '"GetBook"\n')


def test_evaluation_error_exit_1():
    rc, out, err = run("request.host")
    assert (rc, out) == (1, "")
    assert err == "error: lookup failed: 'request.host'\n"


def test_type_error_exit_2():
    rc, out, err = run('response.code | "x"')
    assert (rc, out) == (2, "")
    assert err.startswith("error: col 17: ") and "expected INT64" in err


def test_unknown_attribute_suggestion():
    rc, _, err = run('source.workload.name | source.lables["app"]')
    assert rc == 2
    assert err == "error: col 24: unknown attribute 'source.lables' (did you mean 'source.labels'?)\n"


def test_parse_error_exit_2():
    rc, _, err = run("a = 2")
    assert rc == 2 and err.startswith("error: col 3: ")


def test_bad_attr_value_and_usage():
    assert run("--attr", "response.code=abc", "response.code")[0] == 2
    assert run("--attr", "no.such=1", "true")[0] == 2
    assert run()[0] == 2
    assert run("--help")[0] == 0
