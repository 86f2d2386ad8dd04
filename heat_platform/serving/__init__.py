"""Serving: packaging champions as bentos, running them, rolling them out blue/green."""
