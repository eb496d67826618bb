# The app image for docker-compose.yml: one image, one process per service.
FROM node:20-bookworm-slim AS assets
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY --from=assets /app/node_modules ./node_modules
COPY . .
# The edge's window book compiled (edge_app/compiled.py), with a C compiler needed for that step only.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && \
    python -m edge_app.compiled && \
    rm -rf build && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
# A deployment image runs the product only: the developer tooling app stays out.
ENV FOG_TOOLING=off
