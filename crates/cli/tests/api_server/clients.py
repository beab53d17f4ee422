# docker-py and testcontainers-python against `vessel serve` (DOCKER_HOST), for
# tests/api_containers.rs: argv[1] is the image (a busybox with httpd). Each client
# starts a web container with port 80 published on an ephemeral host port, waits for
# its log line, reads the mapped port, fetches a page through 127.0.0.1, and removes
# it. Prints one "ok ..." line per client; any failure raises (exit 1).
import sys
import urllib.request

import docker
from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import wait_for_logs

image = sys.argv[1]
script = "mkdir -p /www && echo page-$NAME > /www/index.html && echo serving && exec httpd -f -p 80 -h /www"


def get(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        return r.read().decode().strip()


# docker-py
client = docker.from_env()
assert client.ping()
c = client.containers.run(image, ["sh", "-c", script], detach=True, ports={"80/tcp": None},
                          environment={"NAME": "dockerpy"}, name="dockerpy")
for line in c.logs(stream=True, follow=True):
    if b"serving" in line:
        break
c.reload()
port = int(c.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])
assert port > 0, c.attrs["NetworkSettings"]
page = get(port)
assert page == "page-dockerpy", page
assert c.status == "running", c.status
rc, out = c.exec_run(["sh", "-c", "echo exec-$NAME"])
assert (rc, out) == (0, b"exec-dockerpy\n"), (rc, out)
c.stop(timeout=1)
assert c.wait(timeout=30)["StatusCode"] == 137
c.remove()
assert not client.containers.list(all=True, filters={"name": "dockerpy"})
print(f"ok docker-py port={port} page={page}")

# testcontainers (its reaper container is off: TESTCONTAINERS_RYUK_DISABLED=true)
with DockerContainer(image).with_command(["sh", "-c", script]).with_env("NAME", "tc").with_exposed_ports(80) as tc:
    wait_for_logs(tc, "serving", timeout=30)
    port = int(tc.get_exposed_port(80))
    page = get(port)
    assert page == "page-tc", page
    cid = tc.get_wrapped_container().id
print(f"ok testcontainers port={port} page={page}")
assert not client.containers.list(all=True, filters={"id": cid})
print("ok removed")
