"""Deep House Spy: who made this track?"""
