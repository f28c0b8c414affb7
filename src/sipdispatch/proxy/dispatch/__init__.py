"""Pure dispatching decisions: destinations, sets, selection algorithms, health."""
