"""The local stack: moto with our template and handlers (``aws_stack``), real databases (``rig``).

Its loggers are named ``local_stack.*``: no name with "rotator" in it. Powertools (POWERTOOLS_SERVICE_NAME=rotator)
puts its JSON handler on the ``rotator`` logger, where the stack's records would carry the last function's keys, and
filters every record whose logger name contains "rotator" out of the root logger's handlers.
"""
