# Versions of everything the local cluster builds (sourced by build.sh and cluster.sh).
# Kubernetes 1.34: the newest minor whose kubelet still runs on cgroup v1 by default
# (failCgroupV1 defaults to true from 1.35) and that still supports containerd 1.6/1.7,
# which is what Debian 12 packages; the chart asks for kubeVersion >=1.23.
K8S_VERSION=${K8S_VERSION:-v1.34.4}
K8S_STAGING=${K8S_STAGING:-v0.${K8S_VERSION#v1.}}      # published k8s.io/* modules of that release
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
ETCD_VERSION=${ETCD_VERSION:-v3.6.5}                   # what Kubernetes 1.34.4 pins (build/dependencies.yaml)
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.1}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
PAUSE_IMAGE=${PAUSE_IMAGE:-registry.k8s.io/pause:3.10.1}
COREDNS_IMAGE=${COREDNS_IMAGE:-registry.k8s.io/coredns/coredns:$COREDNS_VERSION}
