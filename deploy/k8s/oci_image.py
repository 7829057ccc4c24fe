#!/usr/bin/env python3
"""Pack a directory into a one-layer image tar in `docker save` format.

Why: no registry is reachable, so the few system images the cluster needs (the pod sandbox
"pause" image, CoreDNS) are built from local binaries and loaded with
`ctr -n k8s.io images import`, which reads this format. Files are added owned by root with
a fixed mtime so the same binary gives the same image id.

usage: oci_image.py --name REF --rootfs DIR --entrypoint /path [--arg X ...] --out FILE.tar
"""
import argparse
import hashlib
import io
import json
import os
import tarfile


def layer_tar(rootfs):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                full = os.path.join(dirpath, name)
                info = tar.gettarinfo(full, arcname=os.path.relpath(full, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isfile():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--rootfs", required=True)
    ap.add_argument("--entrypoint", required=True)
    ap.add_argument("--arg", action="append", default=[])
    ap.add_argument("--user", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    layer = layer_tar(a.rootfs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [a.entrypoint], "Cmd": a.arg or None, "User": a.user,
                   "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "deploy/k8s/oci_image.py"}],
        "created": "1970-01-01T00:00:00Z",
    }
    cfg = json.dumps(config, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    layer_name = diff_id[len("sha256:"):] + "/layer.tar"
    manifest = [{"Config": cfg_name, "RepoTags": [a.name], "Layers": [layer_name]}]
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        add(tar, cfg_name, cfg)
        add(tar, layer_name, layer)
        add(tar, "manifest.json", json.dumps(manifest).encode())
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
