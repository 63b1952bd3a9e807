"""Provider adapters behind :class:`faceswap.ports.Provider`, one module per provider (contracts: providers.md)."""
