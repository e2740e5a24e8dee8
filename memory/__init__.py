"""Memory of finished blocks (summary tokens, retrieval, entities). Installed as `blockgen.memory`."""
