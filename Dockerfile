# The relay's image: the package installed from this source tree as a wheel, run as a user
# that is not root.  The same image runs every process of docker-compose.yml (worker, console,
# sandbox, demo producer); tests/test_containers.py checks what can be checked without Docker.
#
#   docker build -t conversion-relay .
#   docker compose up        (the demo: Redis, a worker, the console, the vendor sandbox)

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY conversion_relay ./conversion_relay
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /home/relay --create-home --shell /usr/sbin/nologin relay
USER relay
WORKDIR /home/relay
# Ready means Redis answers and this process's part of the relay works (see docs/operations.md, "Containers").
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD conversion-relay health --ready
CMD ["conversion-relay", "--help"]
