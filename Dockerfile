# Tracklane for split deployments: `collector`, `stream` and `migrate` against Apache Kafka
# and a ClickHouse server (see docker-compose.yml). The embedded default (`tracklane up`)
# is for a laptop, not this image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tracklane ./tracklane
COPY collector ./collector
COPY stream ./stream
COPY store ./store
COPY alerts ./alerts
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# The built browser SDK (committed under sdk_js/dist), served by the collector at /sdk/.
COPY sdk_js/dist /usr/share/tracklane/sdk
# The collector's disk spool lives under the data dir; a volume mounted there keeps it
# (and its ownership) across container restarts.
RUN useradd --system --uid 10001 tracklane \
 && mkdir -p /var/lib/tracklane/spool && chown -R tracklane /var/lib/tracklane
USER tracklane
ENV TRACKLANE_HOST=0.0.0.0 \
    TRACKLANE_DATA_DIR=/var/lib/tracklane \
    TRACKLANE_SDK_DIR=/usr/share/tracklane/sdk \
    TRACKLANE_PORT=8080 \
    PYTHONUNBUFFERED=1
EXPOSE 8080 9464
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["tracklane"]
CMD ["collector"]
