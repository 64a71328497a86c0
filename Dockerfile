# One image for every role of the platform; the command picks the role, and
# SPAM_ROLE tells the HEALTHCHECK which one to ask (docker-compose.yml sets both):
#   SPAM_ROLE  command
#   serving    spam-serve  (the default: the gRPC classifier)
#   code       dagster code-server start -m spam_assets.definitions
#   webserver  dagster-webserver -w /opt/dagster/home/workspace.yaml
#   daemon     dagster-daemon run -w /opt/dagster/home/workspace.yaml
#   mlflow     mlflow server --artifacts-destination /mlartifacts --serve-artifacts
#   -          spam-platform / spam-classify (the CLIs)
# Give each service its address in the environment (SPAM_SERVING_HOST/_PORT,
# DAGSTER_CODE_SERVER_HOST/_PORT, DAGSTER_WEBSERVER_HOST/_PORT, MLFLOW_HOST/_PORT),
# which the service and `spam-healthcheck` both read; a port given only as a
# flag is one the check cannot see. Build: docker build -t spam-platform:local .

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# build: wheels for every dependency, then for the project.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src

# Dependencies first, from pyproject.toml alone: these layers are rebuilt only
# when pyproject.toml changes, never when only code does. The requirement list
# is the project's dependencies plus its `deploy` extra (dagster-postgres,
# which brings psycopg2-binary for Dagster's and MLflow's PostgreSQL stores).
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p.get('optional-dependencies', {}).get('deploy', [])))" \
        > /requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels -r /requirements.txt \
    && cp /requirements.txt /wheels/ \
    && pip install "setuptools>=68" wheel

# Then the project itself (pure Python, no dependencies resolved here).
COPY spam_assets ./spam_assets
COPY serving ./serving
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

# ---------------------------------------------------------------------------
# runtime: the installed project, no compiler, not root.
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="spam-platform" \
      org.opencontainers.image.description="Spam classifier platform: Dagster code server, webserver, daemon, MLflow server and gRPC serving in one image" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    SPAM_HOME=/var/lib/spam \
    DAGSTER_HOME=/opt/dagster/home \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    GIT_PYTHON_REFRESH=quiet \
    DO_NOT_TRACK=true

RUN groupadd --gid 10001 spam \
    && useradd --uid 10001 --gid spam --home-dir /home/spam --create-home --shell /usr/sbin/nologin spam \
    && mkdir -p /var/lib/spam/inbox /var/lib/dagster /mlartifacts /opt/dagster/home \
    && chown spam:spam /var/lib/spam /var/lib/spam/inbox /var/lib/dagster /mlartifacts

# Dependencies from the build stage's wheels, without copying the wheels into a
# layer; cached for as long as the requirement list is unchanged. The list is
# copied first because buildah (podman's builder) leaves a bind mount's content
# out of the cache key: without this layer, an image built after a new
# dependency reused the old dependency layer and lacked it. pip compiles the
# bytecode here, since the non-root user cannot write it later. The test suites
# of the scientific stack (~100 MB, never imported at run time) are dropped.
COPY --from=build /requirements.txt /tmp/requirements.txt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels -r /tmp/requirements.txt \
    && pip check \
    && cd "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && find numpy scipy pandas pyarrow sklearn matplotlib -depth -type d -name tests -exec rm -rf {} +

# Deployment glue: the Postgres-backed instance, the workspace, entrypoint and health check.
COPY deploy/dagster.yaml deploy/workspace.yaml /opt/dagster/home/
COPY deploy/entrypoint.py /usr/local/bin/spam-entrypoint
COPY deploy/healthcheck.py /usr/local/bin/spam-healthcheck

# The project last: a code change rebuilds only these small layers. (A COPY,
# not a second bind mount of the build stage: buildah 1.28 loses that mount.)
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-index --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist

USER spam
WORKDIR /home/spam
EXPOSE 50051 4000 3000 5000
# The default role's settings live in the environment, where spam-serve and
# its health check both read them (SPAM_SERVING_HOST, SPAM_SERVING_PORT, ...).
ENV SPAM_ROLE=serving \
    SPAM_SERVING_HOST=0.0.0.0
# Asks the service $SPAM_ROLE names, at the address its own environment gives
# it; for spam-serve, its gRPC health service: NOT_SERVING until a champion is loaded.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 CMD ["spam-healthcheck"]
ENTRYPOINT ["spam-entrypoint"]
CMD ["spam-serve"]
