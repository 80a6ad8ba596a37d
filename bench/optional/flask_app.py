"""Optional comparison row of bench/run (OPTIONAL=1): Flask answering GET /
and POST /api/v1/echo like examples/bare.rs, served by gunicorn."""

import os

from flask import Flask, jsonify, request

app = Flask(__name__)
VERSION = os.environ.get("BENCH_VERSION", "0.1.0")


@app.get("/")
def root():
    return jsonify(status="healthy", service="portbound", version=VERSION)


@app.post("/api/v1/echo")
def echo():
    message = request.get_json()["message"]
    return jsonify(
        message=message,
        length=len(message),
        request={"method": request.method, "path": request.path},
    )
