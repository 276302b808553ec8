"""Developer tools: the local broker, TLS material, the demo, replay and tail, the bench."""
