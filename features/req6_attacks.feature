@pci-req-6
Feature: PCI DSS 6.2.4 and 6.4 — common web attacks are prevented
  The API validates every parameter and never answers hostile input with a server error or an
  HTML page. The web application firewall in front of it blocks attacks outright.

  @pci-6.2.4
  Scenario Outline: Hostile input in parameters is refused with a client error
    Given a merchant with a secret key
    When an attacker sends "<payload>" as the "<parameter>" parameter of a payment
    Then the request is refused with a client error, not a server error

    Examples:
      | payload                                   | parameter      |
      | 1000' OR '1'='1                           | amount         |
      | usd'; DROP TABLE payment_intents;--       | currency       |
      | <script>alert(document.cookie)</script>   | payment_method |
      | ../../../../etc/passwd                    | customer       |
      | $(cat /etc/passwd)                        | capture_method |
      | {{7*7}}                                   | confirm        |
      | %00%0d%0aSet-Cookie: x=1                  | amount         |

  @pci-6.4.1 @pci-6.2.4
  Scenario Outline: The WAF blocks attacks in the query string
    Given a merchant with a secret key
    When an attacker sends "<payload>" in the query string of a payment search
    Then the request is blocked by the web application firewall

    Examples:
      | payload                              |
      | ' UNION SELECT card_number FROM x--  |
      | <img src=x onerror=alert(1)>         |
      | ; /bin/cat /etc/passwd               |

  @pci-6.4.2 @pci-6.4.1
  Scenario Outline: The WAF blocks attacks in the request body
    Given a merchant with a secret key
    When an attacker sends "<payload>" as the "<parameter>" parameter of a payment
    Then the request is blocked by the web application firewall

    Examples:
      | payload                                 | parameter     |
      | 1 OR 1=1; SELECT pg_sleep(10)--         | description   |
      | <svg/onload=alert(1)>                   | description   |
      | ..%252f..%252f..%252fetc%252fpasswd     | customer      |

  @pci-6.4.1
  Scenario: The WAF blocks path traversal in the URL
    Given a merchant with a secret key
    When an attacker requests the path "/v1/payment_intents/..%2f..%2f..%2fetc%2fpasswd"
    Then the request is blocked by the web application firewall
