# One image for every service; compose picks the process by command.
# GPU hosts build with --build-arg TF_PACKAGE="tensorflow[and-cuda]".
FROM python:3.11-slim

ARG TF_PACKAGE=tensorflow-cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MELANOMA_INSTANCE=/data

RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY web web
COPY worker worker
COPY models models
COPY migrations migrations
RUN pip install "${TF_PACKAGE}" && pip install -e ".[litert,train]"
RUN useradd --create-home --uid 1000 melanoma && mkdir -p /data && chown melanoma /data
USER melanoma
VOLUME /data
EXPOSE 5000
CMD ["gunicorn", "--bind", "0.0.0.0:5000", "--workers", "4", "--timeout", "300", "web:create_app()"]
