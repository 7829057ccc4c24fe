# What the compose tests (e2e_docker.sh, e2e_docker_scale.sh) share; sourced, from the
# repository's top folder, after T0 and LOGDIR are set.

step() {
    printf '== [%4ss] %s\n' "$(($(date +%s) - T0))" "$*"
}

# A check that did not hold: said (the caller decides what follows).
bad() {
    printf '== [%4ss] FAIL: %s\n' "$(($(date +%s) - T0))" "$*" >&2
}

fail() {
    bad "$*"
    exit 1
}

# COMPOSE: as given, else `docker compose`, else `docker-compose`; and a Docker engine.
pick_compose() {
    if [ -z "${COMPOSE:-}" ]; then
        if docker compose version >/dev/null 2>&1; then
            COMPOSE="docker compose"
        elif command -v docker-compose >/dev/null 2>&1; then
            COMPOSE=docker-compose
        else
            fail "neither 'docker compose' nor 'docker-compose' is installed"
        fi
    fi
    docker info >/dev/null 2>&1 || fail "the Docker engine does not answer (docker info)"
}

# The base images (offline, from Debian's packages, unless registry images are named),
# then the postern and certs images from this tree.
build_images() {
    if [ -z "${POSTERN_BASE_IMAGE:-}${POSTGRES_IMAGE:-}${NATS_IMAGE:-}" ]; then
        step "base images (deploy/docker/build-base.sh; skipped where they exist)"
        timeout 1200 sh deploy/docker/build-base.sh all >"$LOGDIR/build-base.log" 2>&1 || {
            tail -n 40 "$LOGDIR/build-base.log"
            fail "building the base images"
        }
    fi
    BASE=${POSTERN_BASE_IMAGE:-postern-base:bookworm}
    step "postern and certs images (docker build, FROM $BASE)"
    timeout 1200 docker build --build-arg BASE_IMAGE="$BASE" -f deploy/docker/Dockerfile \
        -t "${POSTERN_IMAGE:-postern:latest}" . >"$LOGDIR/build.log" 2>&1 || {
        tail -n 40 "$LOGDIR/build.log"
        fail "building the postern image (log: $LOGDIR/build.log)"
    }
    timeout 600 docker build --build-arg BASE_IMAGE="$BASE" -f deploy/docker/Dockerfile \
        --target certs -t "${POSTERN_CERTS_IMAGE:-postern-certs:latest}" . \
        >"$LOGDIR/build-certs.log" 2>&1 || {
        tail -n 40 "$LOGDIR/build-certs.log"
        fail "building the certs image (log: $LOGDIR/build-certs.log)"
    }
}
