"""Jobs: their states, the store that keeps them, and the workers that run them."""
