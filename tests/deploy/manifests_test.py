#!/usr/bin/python3
"""The deployment files hold together: the k8s manifests route by the session
header (no ClientIP affinity), every replica uses the Redis session store the
manifests define, selectors match labels; the HAProxy config parses
(`haproxy -c`). With a reachable cluster, `kubectl apply --dry-run=client`
checks the manifests too; without one that part is skipped with a message
(kubectl needs the API server's schema even for a client dry run).
Exit 77 = skipped (python3-yaml missing)."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../..")


def fail(what):
    print(f"FAIL: {what}")
    sys.exit(1)


def main():
    try:
        import yaml
    except ImportError:
        print("SKIP: python3-yaml is not installed")
        sys.exit(77)
    path = os.path.join(ROOT, "deploy/k8s/sinkserve.yaml")
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    for s in services.values():
        if s["spec"].get("sessionAffinity") == "ClientIP":
            fail(f"service {s['metadata']['name']} still pins clients by IP")
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for name, d in deployments.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in d["spec"]["selector"]["matchLabels"].items()):
            fail(f"deployment {name}: its selector does not match its pods' labels")
    server = deployments.get("sinkserve")
    if server is None:
        fail("no sinkserve Deployment")
    args = server["spec"]["template"]["spec"]["containers"][0]["args"]
    store = [a for a in args if a.startswith("--session-store=")]
    if not store or not store[0].startswith("--session-store=redis://"):
        fail("the sinkserve pods do not use a Redis session store")
    redis_host = store[0].split("redis://")[1].split(":")[0]
    if redis_host not in services or redis_host not in deployments:
        fail(f"the session store {redis_host} has no Service and Deployment in the manifest")
    ingresses = by_kind.get("Ingress", [])
    if not ingresses:
        fail("no Ingress routes clients to the replicas")
    for ing in ingresses:
        hashed = ing["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/upstream-hash-by")
        if hashed != "$http_x_session_id":
            fail(f"ingress {ing['metadata']['name']} does not hash on x-session-id")
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                if p["backend"]["service"]["name"] not in services:
                    fail(f"ingress {ing['metadata']['name']} routes to an unknown service")
    print(f"manifests: {len(docs)} objects; routing by x-session-id; store {store[0]}")

    if shutil.which("haproxy"):
        env = dict(os.environ, SINKSERVE_GRPC_BIND="127.0.0.1:1", SINKSERVE_HTTP_BIND="127.0.0.1:2",
                   SINKSERVE_A_GRPC="127.0.0.1:3", SINKSERVE_A_HTTP="127.0.0.1:4",
                   SINKSERVE_B_GRPC="127.0.0.1:5", SINKSERVE_B_HTTP="127.0.0.1:6")
        r = subprocess.run(["haproxy", "-c", "-f", os.path.join(ROOT, "deploy/haproxy/haproxy.cfg")], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"haproxy -c: {r.stdout}{r.stderr}")
        print("haproxy -c: the config is valid")
    else:
        print("haproxy is not installed: its config check is skipped")

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("kubectl is not installed: the dry run is skipped")
    elif subprocess.run([kubectl, "version", "--request-timeout=3s"], capture_output=True).returncode != 0:
        print("kubectl reaches no cluster: the dry run is skipped (client dry runs need the API server's schema)")
    else:
        r = subprocess.run([kubectl, "apply", "--dry-run=client", "-f", path], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"kubectl apply --dry-run=client: {r.stderr}")
        print(r.stdout.strip())
    print("OK")


if __name__ == "__main__":
    main()
