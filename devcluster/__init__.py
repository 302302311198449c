"""The local test ground: a Kubernetes cluster of processes on this machine (cluster.py)."""

# A cluster work folder's record of its components' process ids and ports: written by cluster.py, read by
# hostnet.py (whether the real node's owner still runs; hostnet cannot import cluster).
STATE_FILE = "state.json"
