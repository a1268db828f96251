"""Keeps the two ways of building the image in step: the Dockerfile (for
Docker users) and deploy/image/build.sh with its Containerfile (what CI
builds and runs). Run by deploy/image/check.sh; no container tool needed.

Compared: the user (name, uid, gid, home, login shell), its working
directory (owner and mode), the binary's path, the entrypoint and its
default arguments, the exposed port, and the shells removed. The
Kubernetes Deployment must agree with them too: runAsUser, the container
port, the preStop sleep's path (which must not be a removed one).

Prints one summary line on success; every difference, then exit 1.
"""

import json
import re
import shlex
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
problems = []


def instructions(path):
    """The instructions of the last stage of a Dockerfile: [(NAME, text)],
    continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    stage = []
    for line in lines:
        name, _, text = line.partition(" ")
        if name.upper() == "FROM":
            stage = []
        stage.append((name.upper(), text.strip()))
    return stage


def one(stage, name, where):
    found = [text for n, text in stage if n == name]
    if len(found) != 1:
        problems.append(f"{where}: {len(found)} {name} instructions in the runtime stage, expected 1")
        return None
    return found[0]


def exec_form(text, where, name):
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        problems.append(f"{where}: {name} is not exec form (a JSON list): {text!r}")
        return None
    return value


def layout_of_stage(stage, where):
    copy = one(stage, "COPY", where)
    return {
        "user": one(stage, "USER", where),
        "workdir": one(stage, "WORKDIR", where),
        "port": one(stage, "EXPOSE", where),
        "entrypoint": exec_form(one(stage, "ENTRYPOINT", where), where, "ENTRYPOINT"),
        "cmd": exec_form(one(stage, "CMD", where), where, "CMD"),
        "binary": copy.split()[-1] if copy else None,
    }


def dockerfile_layout():
    where = "Dockerfile"
    stage = instructions(REPO / where)
    layout = layout_of_stage(stage, where)
    run = " ".join(text for n, text in stage if n == "RUN")
    words = shlex.split(run.replace("&&", " && "))

    def option(command, flag):
        for i, w in enumerate(words):
            if w == command:
                for j in range(i + 1, len(words)):
                    if words[j] == "&&":
                        break
                    if words[j] == flag:
                        return words[j + 1]
        return None

    useradd_end = words.index("useradd") + words[words.index("useradd"):].index("&&") \
        if "useradd" in words else 0
    install = re.search(r"install -d -o (\d+) -g (\d+) -m (\d+) (\S+)", run)
    removed = re.search(r"rm -f ((?:/\S*(?:sh|dash|bash)\b ?)+)", run)
    layout.update({
        "name": words[useradd_end - 1] if useradd_end else None,
        "uid": option("useradd", "--uid"),
        "gid": option("groupadd", "--gid"),
        "home": option("useradd", "--home-dir"),
        "login": option("useradd", "--shell"),
        "home_dir": install.groups() if install else None,
        "shells": sorted(removed.group(1).split()) if removed else None,
    })
    return layout


def script_layout():
    where = "deploy/image/build.sh + Containerfile"
    layout = layout_of_stage(instructions(REPO / "deploy/image/Containerfile"), where)
    script = (REPO / "deploy/image/build.sh").read_text()

    def variable(name):
        m = re.search(rf"^{name}=(\S+)$", script, re.M)
        if not m:
            problems.append(f"deploy/image/build.sh: no `{name}=` line")
        return m.group(1) if m else None

    uid, user, home = variable("uid"), variable("user"), variable("home")
    shells = re.search(r"^shells=\(([^)]*)\)$", script, re.M)
    passwd = re.search(r"echo '([^']*:x:[^']*)' >>\\\"\\\$1/etc/passwd", script)
    fields = passwd.group(1).split(":") if passwd else [None] * 7
    install = re.search(r"install -d -o \$uid -g \$uid -m (\d+) \\\"\\\$1\$home\\\"", script)
    layout.update({
        "name": user if fields[0] == "$user" else fields[0],
        "uid": uid,
        "gid": uid if fields[3] == "$uid" else fields[3],
        "home": home if fields[5] == "$home" else fields[5],
        "login": fields[6],
        "home_dir": (uid, uid, install.group(1), home) if install else None,
        "shells": sorted(shells.group(1).split()) if shells else None,
    })
    return layout


def deployment_agrees(layout):
    path = REPO / "deploy/kubernetes/deployment.yaml"
    deploy = yaml.safe_load(path.read_text())
    pod = deploy["spec"]["template"]["spec"]
    for c in pod["containers"]:
        ctx = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        if str(ctx.get("runAsUser")) != layout["uid"] or str(ctx.get("runAsGroup")) != layout["gid"]:
            problems.append(f"{path.name}: runs as {ctx.get('runAsUser')}:{ctx.get('runAsGroup')}, "
                            f"the image's user is {layout['uid']}:{layout['gid']}")
        ports = {str(p["containerPort"]) for p in c.get("ports", [])}
        if layout["port"] not in ports:
            problems.append(f"{path.name}: container ports {sorted(ports)} lack the image's {layout['port']}")
        command = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command") or []
        if command and command[0] in (layout["shells"] or []):
            problems.append(f"{path.name}: the preStop hook runs {command[0]}, which the image removes")


def main():
    docker, script = dockerfile_layout(), script_layout()
    for key in docker:
        if docker[key] is None or docker[key] != script[key]:
            problems.append(f"{key}: Dockerfile {docker[key]!r}, deploy/image {script[key]!r}")
    if docker["user"] != f"{docker['uid']}:{docker['gid']}":
        problems.append(f"USER {docker['user']} is not the user {docker['uid']}:{docker['gid']}")
    deployment_agrees(docker)
    if problems:
        for p in problems:
            print(f"image check: DIFFERS: {p}", file=sys.stderr)
        return 1
    print(f"image check: OK: Dockerfile and deploy/image agree (user {docker['name']} {docker['user']}, "
          f"{docker['binary']}, entrypoint {docker['entrypoint'] + docker['cmd']}, port {docker['port']}, "
          f"no {' '.join(docker['shells'])}) and so does deploy/kubernetes/deployment.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
