FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY projections ./projections
RUN pip install --no-cache-dir .
CMD ["backupctl", "--help"]
