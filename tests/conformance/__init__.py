"""RFC 6455 conformance harness modelled on the Autobahn|Testsuite fuzzing client.

``client`` speaks raw WebSocket over TCP, ``runner`` applies Autobahn's outcome rules to one case,
``cases`` defines categories 1-7, 9 and 10 with the testsuite's exact parameters.
"""
