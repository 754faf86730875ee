# videocall: one image for every role (serve, signaling, relay). Build: docker build -t videocall .
# The demo page's two npm files (janus.js, webrtc-adapter) come from `npm ci` in a Node stage;
# nothing of Node is left in the final image.
FROM node:20-slim AS web
WORKDIR /web
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim
# aiortc and PyAV ship manylinux wheels with their native libraries: no compiler needed.
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY signaling ./signaling
COPY mediarelay ./mediarelay
COPY videocall ./videocall
COPY loadtest ./loadtest
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 videocall \
    && mkdir -p /recordings && chown videocall /recordings
COPY --from=web /web/node_modules /app/node_modules
ENV VIDEOCALL_NODE_MODULES=/app/node_modules \
    VIDEOCALL_RECORDINGS_DIR=/recordings \
    PYTHONUNBUFFERED=1
USER videocall
EXPOSE 8188
# The embedded default: signalling, the demo page and one relay worker per core.
CMD ["videocall", "serve", "--host", "0.0.0.0"]
