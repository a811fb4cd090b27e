"""Everything that thinks, embeds or draws goes through a provider chosen by configuration."""
