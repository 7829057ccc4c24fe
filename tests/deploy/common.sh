# What the compose tests (e2e_docker.sh, e2e_docker_scale.sh) share; sourced, from the
# repository's top folder, after T0 and LOGDIR are set. The functions below that touch the
# stack use the script's own compose() and PROJECT.

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

# build_one TAG DIR WHAT: one image from DIR's Dockerfile on $BASE (a registry base image),
# its log kept in $LOGDIR/build-WHAT.log.
build_one() {
    step "$3 image ($2, FROM $BASE)"
    timeout 900 docker build --build-arg BASE_IMAGE="$BASE" -t "$1" "$2" \
        >"$LOGDIR/build-$3.log" 2>&1 || {
        tail -n 40 "$LOGDIR/build-$3.log"
        fail "building the $3 image (log: $LOGDIR/build-$3.log)"
    }
}

# The base images (offline, from Debian's packages, unless registry images are named) and
# the balancer's, then the postern and certs images from this tree (their build stage tagged
# postern-build:latest as `make images` does, so that no untagged image is left behind).
build_images() {
    BASE=${POSTERN_BASE_IMAGE:-postern-base:bookworm}
    if [ -z "${POSTERN_BASE_IMAGE:-}${POSTGRES_IMAGE:-}${NATS_IMAGE:-}" ]; then
        step "base images (deploy/docker/build-base.sh; skipped where they exist)"
        timeout 1200 sh deploy/docker/build-base.sh all >"$LOGDIR/build-base.log" 2>&1 || {
            tail -n 40 "$LOGDIR/build-base.log"
            fail "building the base images"
        }
    else
        build_one "${HAPROXY_IMAGE:-postern-haproxy:2.6}" deploy/docker/haproxy balancer
    fi
    step "postern and certs images (docker build, FROM $BASE)"
    timeout 1200 docker build --build-arg BASE_IMAGE="$BASE" -f deploy/docker/Dockerfile \
        --target build -t postern-build:latest . >"$LOGDIR/build.log" 2>&1 &&
        timeout 1200 docker build --build-arg BASE_IMAGE="$BASE" -f deploy/docker/Dockerfile \
            -t "${POSTERN_IMAGE:-postern:latest}" . >>"$LOGDIR/build.log" 2>&1 || {
        tail -n 40 "$LOGDIR/build.log"
        fail "building the postern image (log: $LOGDIR/build.log)"
    }
    timeout 600 docker build --build-arg BASE_IMAGE="$BASE" -f deploy/docker/Dockerfile \
        --target certs -t "${POSTERN_CERTS_IMAGE:-postern-certs:latest}" . \
        >"$LOGDIR/build-certs.log" 2>&1 || {
        tail -n 40 "$LOGDIR/build-certs.log"
        fail "building the certs image (log: $LOGDIR/build-certs.log)"
    }
    docker image prune -f --filter label=org.postern.image >/dev/null 2>&1 || true
}

# Containers of a service (one-off `run` containers left out), straight from the engine: the
# compose labels are the same for docker-compose v1 and docker compose v2, and this is quick.
ids() {
    docker ps -a -q --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1" --filter "label=com.docker.compose.oneoff=False"
}

# Waits until every container of the given services is running and healthy.
wait_healthy() {
    limit=$1
    shift
    deadline=$(($(date +%s) + limit))
    while :; do
        waiting=""
        for svc in "$@"; do
            found=$(ids "$svc")
            [ -n "$found" ] || waiting="$waiting $svc(missing)"
            for id in $found; do
                state=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null || echo missing)
                case $state in
                    running/healthy) ;;
                    exited/* | dead/*) bad "$svc ($id) has stopped ($state)"; return 1 ;;
                    */unhealthy)
                        bad "$svc is unhealthy: $(docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$id" | grep . | tail -n 1)"
                        return 1 ;;
                    *) waiting="$waiting $svc($state)" ;;
                esac
            done
        done
        [ -z "$waiting" ] && return 0
        if [ "$(date +%s)" -ge "$deadline" ]; then
            bad "not healthy after ${limit}s:$waiting"
            return 1
        fi
        sleep 1
    done
}

# On failure: the containers' states and the last TAIL lines of every service's log.
show_stack() {
    echo "== state of the stack:"
    compose ps 2>&1 || true
    echo "== last log lines:"
    compose logs --no-color --tail "$1" 2>&1 | tail -n 150 || true
}

# down -v, unless E2E_KEEP=1 (then how to remove it later).
remove_stack() {
    if [ "${E2E_KEEP:-0}" = 1 ]; then
        echo "== kept: $COMPOSE -p $PROJECT down -v   removes it"
    else
        step "removing the stack (down -v)"
        compose down -v --remove-orphans >"$LOGDIR/down.log" 2>&1 || cat "$LOGDIR/down.log"
    fi
}
