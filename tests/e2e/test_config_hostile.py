"""The config dir changed the ways real deployments change it, and broken on purpose:
a Kubernetes ConfigMap volume (`..data` symlink swapped by rename), the whole dir replaced
by rename, a file written in pieces, a file deleted, a huge file. The last good config
always serves; each valid state goes live."""
import os
import time

from test_proxy_registry import REGISTRY, ENDPOINT, get, wait_generation


def wait_failures(k, n, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if k.stats().get('keel_config_reloads_total{result="failure"}', 0) >= n:
            return
        time.sleep(0.05)
    raise AssertionError("no failed reload counted")


def wait_output(k, *texts, timeout=5):
    """keel's own log goes through a non-blocking sink: wait for the lines to land."""
    deadline = time.time() + timeout
    while not all(t in k.proc.output() for t in texts) and time.time() < deadline:
        time.sleep(0.05)
    out = k.proc.output()
    assert all(t in out for t in texts), out[-2000:]


def configmap_dir(root, name, files):
    """Lay out files as the kubelet's atomic writer does: ..<ts>/ holds them, ..data
    points at it, and each visible name is a symlink through ..data."""
    ts = root / ("..%s" % name)
    ts.mkdir()
    for fname, text in files.items():
        (ts / fname).write_text(text)
    tmp = root / "..data_tmp"
    os.symlink(ts.name, tmp)
    os.rename(tmp, root / "..data")  # the atomic swap: IN_MOVED_TO "..data"
    for fname in files:
        link = root / fname
        if not link.is_symlink():
            os.symlink(os.path.join("..data", fname), link)


def test_configmap_symlink_swap_goes_live(keel, backend_factory, tmp_path):
    v1, v2 = backend_factory("v1"), backend_factory("v2")
    d = tmp_path / "cm"
    d.mkdir()
    configmap_dir(d, "2026_01", {"registry.yaml": REGISTRY,
                                 "details.yaml": ENDPOINT % {"name": "v1", "port": v1}})
    k = keel("--config-dir", str(d), "--inbound", "off")
    assert get(k, "details:9080") == (200, b"v1")
    gen = k.stats()["keel_config_generation"]
    # the kubelet's update: only ..data changes (no event names a .yaml file)
    configmap_dir(d, "2026_02", {"registry.yaml": REGISTRY,
                                 "details.yaml": ENDPOINT % {"name": "v2", "port": v2}})
    wait_generation(k, gen + 1)
    assert get(k, "details:9080") == (200, b"v2")


def test_dir_replaced_by_rename_is_followed(keel, backend_factory, tmp_path):
    v1, v2, v3 = backend_factory("v1"), backend_factory("v2"), backend_factory("v3")
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "registry.yaml").write_text(REGISTRY)
    (d / "details.yaml").write_text(ENDPOINT % {"name": "v1", "port": v1})
    k = keel("--config-dir", str(d), "--inbound", "off")
    assert get(k, "details:9080") == (200, b"v1")
    gen = k.stats()["keel_config_generation"]

    new = tmp_path / "keel.d.new"
    new.mkdir()
    (new / "registry.yaml").write_text(REGISTRY)
    (new / "details.yaml").write_text(ENDPOINT % {"name": "v2", "port": v2})
    os.rename(d, tmp_path / "keel.d.old")
    os.rename(new, d)
    wait_generation(k, gen + 1)
    assert get(k, "details:9080") == (200, b"v2")
    # and the new dir is watched, not the old inode
    gen = k.stats()["keel_config_generation"]
    (d / "details.yaml").write_text(ENDPOINT % {"name": "v3", "port": v3})
    wait_generation(k, gen + 1)
    assert get(k, "details:9080") == (200, b"v3")


def test_file_written_in_pieces_and_deleted(keel, backend_factory, tmp_path):
    v1, v2 = backend_factory("v1"), backend_factory("v2")
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "registry.yaml").write_text(REGISTRY)
    (d / "details-v1.yaml").write_text(ENDPOINT % {"name": "v1", "port": v1})
    k = keel("--config-dir", str(d), "--inbound", "off")
    gen = k.stats()["keel_config_generation"]
    # a writer that stops half way (as an editor or a crashed `cp` may): refused with a
    # position, the running config keeps serving
    text = ENDPOINT % {"name": "v2", "port": v2}
    with open(d / "details-v2.yaml", "w") as f:
        f.write(text[: text.index("ports:") + 10])
    wait_failures(k, 1)
    wait_output(k, "details-v2.yaml:", "error:")
    assert {get(k, "details:9080")[1] for _ in range(4)} == {b"v1"}
    # the rest of the file arrives: the next generation has both endpoints
    with open(d / "details-v2.yaml", "w") as f:
        f.write(text)
    wait_generation(k, gen + 1)
    assert {get(k, "details:9080")[1] for _ in range(4)} == {b"v1", b"v2"}
    gen = k.stats()["keel_config_generation"]
    (d / "details-v1.yaml").unlink()
    wait_generation(k, gen + 1)
    assert {get(k, "details:9080")[1] for _ in range(4)} == {b"v2"}


def test_huge_file_is_refused_not_read(keel, backend_factory, tmp_path):
    v1 = backend_factory("v1")
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "registry.yaml").write_text(REGISTRY)
    (d / "details.yaml").write_text(ENDPOINT % {"name": "v1", "port": v1})
    k = keel("--config-dir", str(d), "--inbound", "off")
    os.symlink("/dev/zero", d / "zero.yaml")  # endless: must not be read to the end
    wait_failures(k, 1)
    wait_output(k, "zero.yaml:", "larger than 16 MiB")
    assert get(k, "details:9080") == (200, b"v1")


def test_new_symlink_goes_live(keel, backend_factory, tmp_path):
    """A symlink dropped into the dir makes no IN_CLOSE_WRITE: its IN_CREATE is enough."""
    v1 = backend_factory("v1")
    d = tmp_path / "keel.d"
    d.mkdir()
    (d / "registry.yaml").write_text(REGISTRY)
    k = keel("--config-dir", str(d), "--inbound", "off")
    assert get(k, "details:9080")[0] == 503
    gen = k.stats()["keel_config_generation"]
    outside = tmp_path / "details-endpoint.yaml"
    outside.write_text(ENDPOINT % {"name": "v1", "port": v1})
    os.symlink(outside, d / "details.yaml")
    wait_generation(k, gen + 1)
    assert get(k, "details:9080") == (200, b"v1")
