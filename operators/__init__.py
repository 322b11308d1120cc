"""Holoscan operators of the burn pipeline, one module each. Every operator is a thin shell:
receive, call a plain function that is tested without Holoscan, emit."""
