"""Conversation -> model inputs."""
