# flowrelay: the relay (`flowrelay serve`) and the load engine (`flowrelay load`) in one image.
#
#   docker build -t flowrelay .
#   docker run --rm -p 127.0.0.1:12345:12345 flowrelay serve --host 0.0.0.0 --port 12345 -e upper
#
# docker-compose.yml runs it with Prometheus and Grafana. Every dependency installs from a wheel, so the
# slim image needs no compiler.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what `pip install` needs (.dockerignore keeps the rest out of the context); the source is removed
# once installed.
COPY pyproject.toml README.md /tmp/flowrelay-src/
COPY relay /tmp/flowrelay-src/relay
COPY loadtest /tmp/flowrelay-src/loadtest
COPY flowrelay /tmp/flowrelay-src/flowrelay
RUN pip install /tmp/flowrelay-src \
    && rm -rf /tmp/flowrelay-src

# An unprivileged user; /results is where `flowrelay load --out` writes in the Compose setup (a named
# volume mounted there takes this ownership).
RUN useradd --create-home --uid 10001 --user-group flowrelay \
    && mkdir -p /results \
    && chown flowrelay:flowrelay /results
USER flowrelay
WORKDIR /home/flowrelay

# 12345: the relay (WebSocket and GET /metrics); 9464: `flowrelay load --metrics-port 9464`.
EXPOSE 12345 9464
ENTRYPOINT ["flowrelay"]
CMD ["serve", "--host", "0.0.0.0", "--port", "12345"]
