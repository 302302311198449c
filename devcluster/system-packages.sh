#!/bin/sh
# Debian packages the local cluster's real node and its offline image builds need.
# Called by `make demo` and `make test`; a no-op (one dpkg-query) when they are all installed.
#   runc                          the OCI runtime containerd's shim drives (crun refuses hybrid cgroups)
#   containernetworking-plugins   bridge + host-local + loopback CNI plugins
#   iptables conntrack            kube-proxy's Service rules and the pod-subnet firewall
#   ethtool socat iproute2        kubelet/kube-proxy helpers; the node's veth address
#   mmdebstrap                    the Debian base rootfs of the worker and operator images
#   gcc libc6-dev                 the static pause binary (the CRI sandbox image)
#   prometheus redis-server       optional add-ons (addons=("prometheus", "argocd")): the scraper
#                                 KEDA's prometheus trigger reads; Argo CD's cache and the job
#                                 queue of the redis trigger's e2e (devcluster/addons_redis.py)
#   git                           Argo CD's repo server clones the e2e's local git repository
set -eu

PACKAGES="runc containernetworking-plugins iptables conntrack ethtool socat iproute2 mmdebstrap gcc libc6-dev prometheus redis-server git"

missing=""
for package in $PACKAGES; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing="$missing $package"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "==> missing Debian packages:$missing" >&2
    echo "    not root: the local cluster runs without a real node (kwok nodes only)." >&2
    echo "    To get one: sudo apt-get install -y$missing" >&2
    exit 0
fi
echo "==> installing Debian packages for the local cluster's real node:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086  # word splitting is the point
apt-get install -y -qq --no-install-recommends $missing
