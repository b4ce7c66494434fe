#!/bin/sh
# A development CA and a certificate for each service, for gRPC mutual TLS
# between the EdgeSense services (deploy/README.md, "TLS between services").
#
#   sh deploy/tls/make-dev-certs.sh [OUT_DIR]        (default: deploy/tls)
#
# writes, with openssl (1.1.1 or later):
#   OUT_DIR/ca.crt, OUT_DIR/ca.key       the CA (ca.key never goes to a service)
#   OUT_DIR/<name>/tls.crt, tls.key, ca.crt
#       for registry, delivery, bridge, api and envoy: the folders
#       docker-compose.yml mounts, and the keys of a Kubernetes TLS Secret
#       (kubectl create secret generic edgesense-tls-<name> --from-file=OUT_DIR/<name>)
#
# Each certificate names its service as compose and Kubernetes dial it
# (`registry`, `registry.edgesense.svc`, ...), and serves and dials both
# (extendedKeyUsage serverAuth, clientAuth). An existing CA is kept, so running
# it again renews the service certificates under the same CA.
#
# For one Docker host: the service keys are readable by the containers' users
# (uid 10001, Envoy's 101), who are not the uid that ran this. In production
# use your own CA or cert-manager, and keep keys in a secret store.
set -eu

out=${1:-$(dirname "$0")}
days=${EDGESENSE_DEV_CERT_DAYS:-365}
namespace=${EDGESENSE_K8S_NAMESPACE:-edgesense}
mkdir -p "$out"

if [ ! -s "$out/ca.key" ] || [ ! -s "$out/ca.crt" ]; then
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/ca.key")
    openssl req -x509 -new -key "$out/ca.key" -sha256 -days 3650 \
        -subj "/O=EdgeSense development/CN=EdgeSense development CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$out/ca.crt"
fi

issue() {
    name=$1
    shift
    dir="$out/$name"
    mkdir -p "$dir"
    sans=""
    for host in "$@"; do
        for dns in "$host" "$host.$namespace" "$host.$namespace.svc" "$host.$namespace.svc.cluster.local"; do
            sans="$sans${sans:+,}DNS:$dns"
        done
    done
    ext="$dir/ext.cnf"
    cat >"$ext" <<CONF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=$sans
CONF
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/tls.key"
    chmod 644 "$dir/tls.key"
    openssl req -new -key "$dir/tls.key" -subj "/O=EdgeSense development/CN=$name" |
        openssl x509 -req -sha256 -days "$days" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -extfile "$ext" -out "$dir/tls.crt" 2>/dev/null
    rm -f "$ext"
    cp "$out/ca.crt" "$dir/ca.crt"
    echo "$dir: $(echo "$sans" | tr ',' ' ')"
}

issue registry registry
issue delivery delivery
# Compose's replicas answer as bridge, bridge-1 and bridge-2; Kubernetes' as bridge.
issue bridge bridge bridge-1 bridge-2
issue api api
issue envoy envoy
