FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY breaker ./breaker
COPY cli ./cli
COPY imagequeue ./imagequeue
COPY providers ./providers
COPY scheduler ./scheduler
COPY storage ./storage
COPY workers ./workers
RUN pip install --no-cache-dir .
ENTRYPOINT ["imgq"]
