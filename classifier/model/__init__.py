"""The networks and what turns their outputs into answers: the musicnn backbone, artist heads, voting, genre."""
