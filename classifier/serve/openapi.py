"""The service's API described as OpenAPI 3.1 (`GET /openapi.json`), with the limits the settings set."""

from __future__ import annotations

from typing import Any

from classifier.settings import Settings

__all__ = ["openapi"]


def openapi(settings: Settings) -> dict[str, Any]:
    err = {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    audio_body = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Link"}},
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "video/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary"}, "at": {"type": "string"},
                "seconds": {"type": "number"}, "name": {"type": "string"}}}},
        },
    }
    params = [
        {"name": "at", "in": "query", "schema": {"type": "string"}, "description": "start, e.g. 1:02:03 (uploads)"},
        {"name": "seconds", "in": "query", "schema": {"type": "number"},
         "description": f"how much to analyse (at most max_clip_seconds = {settings.max_clip_seconds:g})"},
        {"name": "name", "in": "query", "schema": {"type": "string"}, "description": "shown as the answer's source"},
    ]
    errors_doc = {str(code): err for code in (400, 401, 413, 415, 422, 429, 502, 503, 504)}

    def post(summary: str, schema: str) -> dict[str, Any]:
        return {"post": {"summary": summary, "security": [{"bearer": []}], "parameters": params,
                         "requestBody": audio_body,
                         "responses": {"200": {"description": "OK", "content": {"application/json": {
                             "schema": {"$ref": f"#/components/schemas/{schema}"}}}}, **errors_doc}}}

    def probe(summary: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "responses": {"200": {"description": "OK"}, "503": err}}}

    cand = {"type": "object", "properties": {"score": {"type": "number"}, "votes": {"type": "integer"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Deep House Spy classifier", "version": "1",
                 "description": "Who made this track? Genres and artist style for a clip. Send a YouTube/SoundCloud "
                                "link as JSON or the audio itself. Errors: {\"error\": code, \"message\": text}; "
                                f"bodies up to {settings.max_body_bytes} bytes; 429 with Retry-After when the "
                                f"queue ({settings.max_queue_jobs} jobs) is full."},
        "paths": {
            "/v1/genre": post("Genres and descriptors of a clip", "GenreReport"),
            "/v1/identify": post("The enrolled artists whose style the clip most resembles", "Verdict"),
            "/v1/about": {"get": {"summary": "Backbones and the active artist model", "security": [{"bearer": []}],
                                  "responses": {"200": {"description": "OK"}, "401": err}}},
            "/healthz": probe("Alive"),
            "/readyz": probe("Model loaded and warm"),
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Link": {"type": "object", "required": ["url"], "properties": {
                    "url": {"type": "string"}, "at": {"type": ["string", "number"]}, "seconds": {"type": "number"}}},
                "Error": {"type": "object", "required": ["error", "message"], "properties": {
                    "error": {"type": "string"}, "message": {"type": "string"}, "retry_after_s": {"type": "number"}}},
                "GenreReport": {"type": "object", "required": ["source", "seconds", "slices", "genres", "descriptors"],
                                "properties": {"source": {"type": "string"}, "start": {"type": "number"},
                                               "seconds": {"type": "number"}, "slices": {"type": "integer"},
                                               "genres": {"type": "array", "items": cand},
                                               "descriptors": {"type": "array", "items": cand},
                                               "timings": {"type": "object"}, "hint": {"type": ["string", "null"]},
                                               "timeline": {"type": "array"}}},
                "Verdict": {"type": "object", "required": ["source", "artists", "verdict", "confidence", "model"],
                            "properties": {"source": {"type": "string"}, "seconds": {"type": "number"},
                                           "slices": {"type": "integer"}, "artists": {"type": "array", "items": cand},
                                           "confidence": {"type": "number"}, "vote_share": {"type": "number"},
                                           "verdict": {"enum": ["identified", "unknown"]},
                                           "genres": {"type": "array", "items": cand}, "model": {"type": "object"},
                                           "timings": {"type": "object"}, "hint": {"type": ["string", "null"]},
                                           "timeline": {"type": "array"}}},
            },
        },
    }
