"""The API service and the client that talks to it."""
