"""JSON errors for the API: bad input answers 4xx with a message, never a 500 page."""

from flask import jsonify, request
from werkzeug.exceptions import HTTPException

from web.api import bp


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str):
    response = jsonify({"error": message, "status": status})
    response.status_code = status
    return response


@bp.errorhandler(ApiError)
def _api_error(error: ApiError):
    return error_response(error.status, error.message)


@bp.app_errorhandler(HTTPException)
def _http_error(error: HTTPException):
    """JSON for every error under /api/ (unknown URLs and wrong methods included); pages keep HTML."""
    if not request.path.startswith("/api/"):
        return error
    return error_response(error.code or 500, error.description or error.name)
