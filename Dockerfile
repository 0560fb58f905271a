FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY breaker ./breaker
COPY cli ./cli
COPY imagequeue ./imagequeue
COPY providers ./providers
COPY scheduler ./scheduler
COPY simulator ./simulator
COPY storage ./storage
COPY throttle ./throttle
COPY workers ./workers
RUN pip install --no-cache-dir .
# Not root; the directories named volumes are mounted on belong to this user.
RUN useradd --create-home --uid 10001 imgq && mkdir -p /data/catalogue /data/images \
    && chown -R imgq /data
USER imgq
ENTRYPOINT ["imgq"]
