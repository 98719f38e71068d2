"""Job entry points: each reads its inputs, calls pure transforms, writes through the one writer."""
