"""Small helpers shared by the library and the commands: errors for people, atomic writes, console noise, memory."""
