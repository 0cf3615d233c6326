# syntax=docker/dockerfile:1.7
#
# The orchestrator image: one image, one entry point, for the operator, the API and
# the migrations job — `sba-agentic operator|api|migrate`.
#   docker build -t sba-agentic/orchestrator:0.1.0 .
# Tool steps run in their own, smaller image (tool-images/runtime/Dockerfile).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cli ./cli
COPY core ./core
COPY store ./store
COPY operator ./operator
COPY api ./api
COPY tool-images/sba_tools ./tool-images/sba_tools
COPY devstack ./devstack
COPY migrations ./migrations
RUN python -m venv /opt/sba \
 && /opt/sba/bin/pip install /src \
 && /opt/sba/bin/python -m compileall -q /opt/sba/lib \
 && /opt/sba/bin/sba-agentic --help >/dev/null \
 && /opt/sba/bin/python -m pip uninstall -y pip setuptools wheel

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sba-agentic/orchestrator" \
      org.opencontainers.image.version="0.1.0"
RUN python -m compileall -q -j 0 /usr/local/lib/python3.11 || true
COPY --from=build /opt/sba /opt/sba
ENV PATH=/opt/sba/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp
WORKDIR /tmp
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/opt/sba/bin/sba-agentic"]
CMD ["api"]
