"""`whispertune serve`: an HTTP server with OpenAI's audio transcription API over any whispertune model.

backends: what transcribes (a transformers model through load_for_inference, or a CTranslate2 export through
faster-whisper); batcher: concurrent requests grouped into one model call; responses: OpenAI's response
formats; app: the FastAPI application (routes, limits, errors, the web page).
"""
