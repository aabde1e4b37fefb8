"""Tests for reward.py: written cases for every rule (both directions), the real-data checks (skipped when
../shared/data is absent), injection payloads, the time bounds (one sympy proof; the budget of one grade call),
and a seeded property test.

    python -m pytest -q test_reward.py
"""

import json
import multiprocessing
import os
import random
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import reward as R
from reward import Result, extract_answer, gold_answer, grade

DATA = Path(__file__).resolve().parent.parent / "shared" / "data"
C, W, N = "correct", "wrong", "no_answer"

EITHER = r"two points: $\boxed{(10, 0)}$ and $\boxed{(0,0)}.$ (Either point is an acceptable answer.)"
CASES = [  # (completion, gold, expected status)
    # --- extraction: last box, nesting, shorthand, truncation, several boxes, fallbacks
    (r"First \boxed{3}. Wait, that is wrong: \boxed{4}", "4", C),
    (r"First \boxed{3}. Wait, that is wrong: \boxed{4}", "3", W),
    (r"$\boxed{\frac{1}{\sqrt{2}}}$", r"\frac{\sqrt2}{2}", C),
    (r"so \fbox{12} is it", "12", C),
    (r"so $\boxed 5$.", "5", C),
    (r"\boxed{\boxed{7}}", "7", C),
    (r"The answer is \boxed{12", "12", N),                       # cut off inside the box
    (r"\boxed{3} and later \boxed{12", "3", N),                   # no fallback to an earlier box
    (r"The answer is \boxed{}", "1", N),
    (r"\boxed{3} or \boxed{4}", "3", W),                          # hedging is a list, never a single gold
    (r"\boxed{3} or \boxed{4}", "3, 4", C),
    (r"$x=\boxed{1}$, $\boxed{-2}$", "1,-2", C),
    (r"\boxed{5} \boxed{5}", "5", C),                             # repetition is not hedging
    (r"\boxed{15\frac{39}{40}}, or \boxed{\frac{639}{40}}", r"\frac{639}{40}", C),
    ("She pays 6 + 12 = 18 dollars.\n#### 18.", "18", C),
    ("#### 18", "17", W),
    ("####\n", "18", N),
    ("So the answer is 27.", 27.0, C),
    ("Final Answer: The final answer is $18$. I hope it is correct.", "18", C),
    ("**Answer:** 42", "42", C),
    ("I computed 5 + 7 = 12 and stopped", "12", N),               # never "the last number in the text"
    (r"the answer is 5, but \boxed{6}", "6", C),                  # a box beats a phrase
    ("", "1", N),
    # --- normalisation
    (r"\boxed{\$18.90}", r"\$18.90", C),
    (r"\boxed{18.9}", r"\$18.90", C),
    (r"\boxed{1,234}", "1234", C),
    (r"\boxed{1,2}", "12", W),
    (r"\boxed{32, 349}", "32349", W),
    (r"\boxed{1,2345}", "12345", W),
    (r"\boxed{10080}", r"10,\!080", C),
    (r"\boxed{11111111100}", r"11,\! 111,\! 111,\! 100", C),
    (r"\boxed{5.4 \text{ cents}}", "5.4", C),
    (r"\boxed{864 \mbox{ inches}^2}", "864", C),
    (r"\boxed{12 apples}", "12", C),
    (r"\boxed{\mathrm{e}^2}", "e^2", C),                          # \mathrm{e} is Euler's number, not a unit
    (r"\boxed{2}", "e^2", W),
    (r"\boxed{90^\circ}", "90", C),
    (r"\boxed{90}", r"90^{\circ}", C),
    (r"\boxed{90°}", r"45^\circ", W),
    (r"\boxed{25}", r"25\%", C),                                  # bare number for a percent gold
    (r"\boxed{0.25}", r"25\%", C),                                # 25% is 0.25
    (r"\boxed{25\%}", "25", C),
    (r"\boxed{25}", "0.25", W),                                   # never gold*100 for a non-percent gold
    (r"\boxed{0.25}", "25", W),                                   # never gold/100 either
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"(3,\frac{\pi}{2})", C),
    (r"\boxed{\dfrac{14}{3}}", r"\tfrac{14}{3}", C),
    (r"\boxed{\frac43}", r"\frac{4}{3}", C),
    (r"\boxed{\frac43}", r"\frac{4}{5}", W),
    (r"\boxed{11\sqrt2}", r"11\sqrt{2}", C),
    (r"\boxed{7\frac{1}{2}}", r"\frac{15}{2}", C),                # mixed number
    (r"\boxed{7\frac{1}{2}}", r"\frac{7}{2}", W),                 # ... not a product
    (r"\boxed{137 \frac{1}{2}}", "137.5", C),
    (r"\boxed{18.00}", "18", C),
    (r"\boxed{18.}", "18", C),
    (r"\boxed{18.5}", "18", W),
    (r"\boxed{25}", "025", C),
    (r"\boxed{4.5 \times 10^{33}}", "4.5e33", C),
    (r"\boxed{4.5e32}", "4.5e33", W),
    (r"\boxed{x = 5}", "5", C),
    (r"\boxed{5}", "x=5", C),
    (r"\boxed{y = 5}", "x=5", W),                                 # two labels must agree
    (r"\boxed{x \in [-2,7]}", "[-2,7]", C),
    (r"\boxed{[-2,7]}", r"x \in (-2,7)", W),
    (r"\boxed{C}", r"\text{(C)}", C),
    (r"\boxed{\textbf{(C)}}", r"\text{(C)}", C),
    (r"\boxed{(D)}", r"\text{(C)}", W),
    (r"\boxed{\text{evelyn}}", r"\text{Evelyn}", C),
    (r"\boxed{Navin}", r"\text{Evelyn}", W),
    (r"\boxed{−5}", "-5", C),                                     # unicode minus
    # --- comparison: exact rationals, rounding, tiny numbers
    (r"\boxed{\frac{4}{6}}", r"\frac23", C),
    (r"\boxed{0.15}", r"\frac{3}{20}", C),
    (r"\boxed{0.16}", r"\frac{3}{20}", W),
    (r"\boxed{0.333333}", r"\frac{1}{3}", C),                     # exact gold: 6 significant digits, rounded
    (r"\boxed{0.3333333333}", r"\frac{1}{3}", C),
    (r"\boxed{0.333}", r"\frac{1}{3}", W),                        # ... a 3-digit decimal is not the fraction
    (r"\boxed{0.33333}", r"\frac{1}{3}", W),
    (r"\boxed{0.333334}", r"\frac{1}{3}", W),                     # ... and the 6 digits must be rounded right
    (r"\boxed{0.666667}", r"\frac{2}{3}", C),
    (r"\boxed{0.666666}", r"\frac{2}{3}", W),
    (r"\boxed{3.14159}", r"\pi", C),
    (r"\boxed{3.14}", r"\pi", W),
    (r"\boxed{3.1416}", r"\pi", W),
    (r"\boxed{1.41421}", r"\sqrt{2}", C),
    (r"\boxed{1.41}", r"\sqrt{2}", W),
    (r"\boxed{1.414}", r"\sqrt{2}", W),
    (r"\boxed{37.6991}", r"12\pi", C),
    (r"\boxed{37.7}", r"12\pi", W),
    (r"\boxed{3.14}", "3.14", C),                                  # a decimal gold keeps the rounding rule
    (r"\boxed{\pi}", "3.14", C),
    (r"\boxed{3.1}", "3.14", W),
    (r"\boxed{4.487 \times 10^{33}}", "4.5e33", C),               # rounds to the gold's last digit
    (r"\boxed{4.44e33}", "4.5e33", W),
    (r"\boxed{0.561}", "0.5613", W),                              # fewer digits never help
    (r"\boxed{2^{-99}}", "2^{-98}", W),
    (r"\boxed{\frac{1}{2004!}}", r"\frac{1}{2006!}", W),
    (r"\boxed{1/2004!}", r"\frac{1}{2004!}", C),
    (r"\boxed{0}", r"\frac{1}{2004!}", W),
    (r"\boxed{0.0}", r"\frac{1}{2004!}", W),
    (r"\boxed{3\sqrt{13}}", r"\sqrt{117}", C),
    (r"\boxed{3\sqrt{13}}", r"\sqrt{116}", W),
    (r"\boxed{2i+1}", "1+2i", C),
    (r"\boxed{1-2i}", "1+2i", W),
    (r"\boxed{\frac{\log 8}{\log 2}}", "3", C),
    # --- structures
    (r"\boxed{(1,2)}", "(1,2)", C),
    (r"\boxed{(2,1)}", "(1,2)", W),                               # points are ordered
    (r"\boxed{3, 1, 2}", "1,2,3", C),                             # "all solutions" are a multiset
    (r"\boxed{1, 2}", "1,2,3", W),
    (r"\boxed{1, 1, 2}", "1,2,2", W),
    (r"\boxed{\{1, 2\}}", "2, 1", C),
    (r"\boxed{[2,4)}", "[2,4)", C),
    (r"\boxed{(2,4]}", "[2,4)", W),
    (r"\boxed{(-\infty, 0]}", r"(-\infty,0]", C),
    (r"\boxed{(-\infty, 0)}", r"(-\infty,0]", W),
    (r"\boxed{(9,36) \cup (0,9)}", r"(0,9) \cup (9,36)", C),      # unions are order-free
    (r"\boxed{(0,36)}", r"(0,9) \cup (9,36)", W),
    (r"\boxed{\begin{bmatrix} -1 & 0 \\ 0 & -1 \end{bmatrix}}", r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}", C),
    (r"\boxed{\begin{pmatrix} -1 & 0 \\ 0 & 1 \end{pmatrix}}", r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}", W),
    (r"\boxed{(-\frac13, \frac23, \frac53)}", r"\begin{pmatrix} -1/3 \\ 2/3 \\ 5/3 \end{pmatrix}", C),
    (r"\boxed{1+\sqrt{19}, 1-\sqrt{19}}", r"1 \pm \sqrt{19}", C),
    (r"\boxed{1+\sqrt{19}}", r"1 \pm \sqrt{19}", W),
    (r"\boxed{x = \frac{3 \pm \sqrt{5}}{2}}", r"\frac{3+\sqrt5}{2}, \frac{3-\sqrt5}{2}", C),
    (r"\boxed{52_8}", "52_8", C),
    (r"\boxed{52}", "52_8", C),                                   # the digits in the asked base
    (r"\boxed{42}", "52_8", W),                                   # ... not the decimal value
    (r"\boxed{4210_8}", "4210_{5}", W),                            # the base is part of the answer
    (r"\boxed{-2}", "-2,-2", W),                                  # a double root is listed twice
    (r"\boxed{(-\infty, 0) \cup \{4\}}", r"(-\infty, 0) \cup\{1\}", W),
    (r"\boxed{(-\infty, 0) \cup \{1\}}", r"(-\infty, 0) \cup\{1\}.", C),
    # --- relations and symbolic equivalence
    (r"\boxed{2x - y + 1 = 0}", "y = 2x + 1", C),                 # equal up to a nonzero factor
    (r"\boxed{0}", "5x - 7y + 11z + 4 = 0", W),                   # never reduced to its right-hand side
    (r"\boxed{-10x + 14y - 22z - 8 = 0}", "5x - 7y + 11z + 4 = 0", C),
    (r"\boxed{5x - 7y + 11z = 4}", "5x - 7y + 11z + 4 = 0", W),
    (r"\boxed{2x + 3}", "y = 2x + 3", C),
    (r"\boxed{2 \le k}", r"k \geqslant 2", C),
    (r"\boxed{k > 2}", r"k \geqslant 2", W),
    (r"\boxed{f(x) = 2x}", "2x", C),
    (r"\boxed{(x+1)^2}", "x^2+2x+1", C),
    (r"\boxed{y^2+2y+1}", "x^2+2x+1", W),                         # strict variable names
    (r"\boxed{(x+1)^3}", "x^2+2x+1", W),
    (r"\boxed{\frac{\sin 2x}{2}}", r"\sin x \cos x", C),
    (r"\boxed{\sin x}", r"\cos x", W),
    (r"\boxed{|x|}", "x", W),
    (r"\boxed{(a+5)(b+2)}", "ab + 2a + 5b + 10", C),
    # --- gold shapes
    ("... so the total is \\boxed{1080}", "She earns 1,000 + 80 = 1,080.\n#### 1,080", C),
    (r"\boxed{-3}", "It drops.\n#### -3", C),
    (r"\boxed{25}", "025", C),
    (r"\boxed{27}", 27.0, C),
    (r"\boxed{27.5}", 27.0, W),
    (r"\boxed{\frac12}", ["$\\frac{1}{2}$"], C),
    (r"\boxed{(3,2), (1,1)}", ["$(1,1), (3,2)$"], C),
    (r"\boxed{62.5}", ["62.5%"], C),
    (r"\boxed{4.49 \times 10^{33}}", "The flux is $\\boxed{4.5e33}$.", C),
    (r"\boxed{4.4e33}", "The flux is $\\boxed{4.5e33}$.", W),
    (r"\boxed{\frac{14}{3}}", {"solution": r"... \boxed{\frac{14}{3}}", "answer": r"\frac{14}{3}"}, C),  # a row
    # --- issue 11, item 2: a gold solution's adjacent boxes are one list answer (MATH test/algebra/1878)
    (r"\boxed{-2, 1}", r"Therefore, the answers are $\boxed{-2}$ and $\boxed{1}$.", C),
    (r"\boxed{1, -2}", r"Therefore, the answers are $\boxed{-2}$ and $\boxed{1}$.", C),
    (r"\boxed{1}", r"Therefore, the answers are $\boxed{-2}$ and $\boxed{1}$.", W),
    (r"\boxed{-2}", r"Therefore, the answers are $\boxed{-2}$ and $\boxed{1}$.", W),
    (r"\boxed{(0,0)}", EITHER, C),                                  # alternatives named by the solution
    (r"\boxed{(10, 0), (0,0)}", EITHER, W),
    (r"\boxed{\frac{639}{40}}", r"$d = \boxed{15\frac{39}{40}},$ or $\boxed{\frac{639}{40}}$ inches.", C),  # twice
    (r"\boxed{15}", r"$d = \boxed{15\frac{39}{40}},$ or $\boxed{\frac{639}{40}}$ inches.", W),
    # --- item 3: a leading 0 group is not a thousands group
    (r"\boxed{111}", "0,111", W),
    (r"\boxed{0, 111}", "0,111", C),
    (r"\boxed{1111}", "1,111", C),
    # --- item 4: TeX's {,} thousands separator
    (r"\boxed{1{,}080}", "She earns 1,000 + 80 = 1,080.\n#### 1,080", C),
    (r"\boxed{1{,}800}", "She earns 1,000 + 80 = 1,080.\n#### 1,080", W),
    (r"\boxed{1008016}", r"1{,}008{,}016", C),
    (r"\boxed{1{,}008{,}016}", "1008016", C),
    (r"\boxed{1008061}", r"1{,}008{,}016", W),
    # --- item 5: "and" / "or" lists
    (r"\boxed{2, 3, 4}", r"2, 3, \text{ and } 4", C),
    (r"\boxed{4, 2, 3}", r"2, 3, \text{ and } 4", C),
    (r"\boxed{2, 3}", r"2, 3, \text{ and } 4", W),
    (r"\boxed{2, 3, 5}", r"2, 3, \text{ and } 4", W),
    (r"\boxed{6, 8, 10}", r"6, 8\text{, and }10", C),
    (r"\boxed{12, 13}", r"12 \text{ and } 13", C),
    (r"\boxed{13}", r"12 \text{ and } 13", W),
    (r"\boxed{12 \text{ and } 13}", "12, 13", C),
    (r"\boxed{12 and 14}", "12, 13", W),
    (r"\boxed{1, 2}", ["$1$ and $2$"], C),
    (r"\boxed{2}", ["$1$ and $2$"], W),
    ("So the answer is $1$ and $2$.", "1, 2", C),
    ("So the answer is $1$ and $2$.", "1", W),
    (r"\boxed{\text{Alice and Bob}}", r"\text{Alice and Bob}", C),  # words stay words
    (r"\boxed{\text{Alice}}", r"\text{Alice and Bob}", W),
    # --- item 6: a trailing approximation, checked and dropped, on either side
    (r"\boxed{\frac{\sqrt3}{3} \approx 0.577}", r"\frac{\sqrt3}{3}", C),
    (r"\boxed{\frac{\sqrt3}{3} \approx 0.578}", r"\frac{\sqrt3}{3}", W),
    (r"\boxed{\frac{\sqrt3}{3}}", r"\frac{\sqrt3}{3} \approx 0.577", C),
    (r"\boxed{\frac{\sqrt3}{2}}", r"\frac{\sqrt3}{3} \approx 0.577", W),
    (r"\boxed{\frac{\sqrt3}{3}}", r"\frac{\sqrt3}{3} \approx 0.5", W),      # the gold's approximation is wrong
    (r"\boxed{0.577}", r"\frac{\sqrt3}{3}", W),                                # (item 1)
    (r"\boxed{x = \frac{1}{3} \approx 0.33}", r"\frac13", C),
    (r"\boxed{12\pi \approx 37.70}", r"12\pi", C),
    (r"\boxed{12\pi \approx 37.6}", r"12\pi", W),
    (r"\boxed{0.67}", r"\$\dfrac23 \approx \$0.67", C),        # MATH train/c&p/360: "rounded to the nearest cent"
    (r"\boxed{0.66}", r"\$\dfrac23 \approx \$0.67", W),
    (r"\boxed{2^5 = 32}", "32", C),                                # an equation of constants is its value ...
    (r"\boxed{2^5 = 31}", "31", W),                                # ... when it is true
    (r"\boxed{\frac13 = 0.333}", "0.333", W),
    (r"\boxed{x = 2^5 = 32}", "32", C),
    (r"\boxed{x = 2^5 = 31}", "31", W),
    # --- item 7: a two-sided inequality gold against an interval answer
    (r"\boxed{(0,1)}", "0<f(x)<1", C),
    (r"\boxed{[0,1]}", "0<f(x)<1", W),
    (r"\boxed{[-80,82]}", r"-80\leq g(x)\leq 82", C),
    (r"\boxed{(-80,82]}", r"-80\leq g(x)\leq 82", W),
    (r"\boxed{82 \ge g(x) \ge -80}", r"-80\leq g(x)\leq 82", C),
    (r"\boxed{x \in (-2, 3)}", "-2 < x < 3", C),
    (r"\boxed{y \in (-2, 3)}", "-2 < x < 3", W),
    (r"\boxed{0<f(x)<1}", "(0,1)", W),                            # the reverse stays wrong
    (r"\boxed{-80 \le g(x) \le 82}", "[-80, 82]", W),
    # --- item 8: pct, !=, a malformed gold
    (r"\boxed{28 pct}", r"28\%", C),
    (r"\boxed{28 \text{ percent}}", "0.28", C),
    (r"\boxed{27 pct}", r"28\%", W),
    (r"\boxed{x != 3}", r"x \neq 3", C),
    (r"\boxed{x \not= 3}", "x != 3", C),
    (r"\boxed{x != 4}", r"x \neq 3", W),
    (r"\boxed{5!=120}", "120", C),                                 # after a digit, ! is a factorial
    (r"\boxed{12}", r"The answer is \boxed{12", W),               # the gold's box never closes: wrong, no raise
    (r"\boxed{12}", r"The answer is \boxed{}", W),
    # --- further shapes from the data: clock times, Minerva's code-style golds, one answer boxed twice
    (r"\boxed{8:34 \text{ PM}}", r"8\!:\!34 \text{ p.m.}", C),
    (r"\boxed{20:34}", r"8\!:\!34 \text{ p.m.}", C),
    (r"\boxed{8:34}", r"8\!:\!34 \text{ p.m.}", W),             # without p.m. it is the morning
    (r"\boxed{4:30 \text{ p.m.}}", r"\text{4:30 p.m.}", C),
    (r"\boxed{4:30 a.m.}", r"\text{4:30 p.m.}", W),
    (r"\boxed{5:00}", r"05\!:\!00", C),
    (r"\boxed{5:01}", r"05\!:\!00", W),
    (r"\boxed{19:60}", "19:60", C),                                # a ratio, not a time
    (r"\boxed{-\frac13}", "-1./3", C),
    (r"\boxed{-\frac12}", "-1./3", W),
    (r"\boxed{\sin^{-1}\left(\frac{10}{13}\right)}", "np.arcsin(10/13)", C),
    (r"\boxed{\arccos\frac{10}{13}}", "np.arcsin(10/13)", W),
    (r"\boxed{28} or \boxed{28_9}", "28_9", C),                    # one answer written twice
    (r"\boxed{0.3} or \boxed{\frac13}", r"\frac13", W),          # ... but a decimal and a fraction are a hedge
    # --- review of issue 11: further false positives and misses found in the data
    (r"\boxed{0.25}", "0.2", W),                                   # a tie is no rounding evidence: 1/4 is not 1/5
    (r"\boxed{\frac14}", "0.2", W),
    (r"\boxed{0.45}", ".5", W),                                    # MATH test/algebra/1057 (exact 1/2)
    (r"\boxed{0.46}", ".5", C),                                    # (inside the rounding window: the rule stays)
    (r"\boxed{187.55}", "187.5", W),
    (r"\boxed{\frac{0.01}{2}}", "0.01", W),                        # Minerva 17
    (r"\boxed{\frac{0.019}{2}}", "0.01", C),
    (r"\boxed{\frac{\sqrt3}{3} \approx 0.58}", "0.58", C),
    (r"\boxed{1.23457 \times 10^{6}}", "1234567", W),              # an exact gold that a decimal can write needs
    (r"\boxed{1.234567 \times 10^{6}}", "1234567", C),             # every digit: 6 are not evidence of it
    (r"\boxed{1.00000e9}", "1000000007", W),
    (r"\boxed{0.000976563}", r"\frac{1}{1024}", W),
    (r"\boxed{0.0009765625}", r"\frac{1}{1024}", C),
    (r"\boxed{2I(0)}", "I(0)", W),                                 # Minerva 61: I(0) is a value, not I * 0
    (r"\boxed{2 I(0) e^{-t/(RC)}}", r"I(0) e^{-\frac{t}{R C}}", W),
    (r"\boxed{I(0)}", "I(0)", C),
    (r"\boxed{I(0) e^{-t/(RC)}}", r"I(0) e^{-\frac{t}{R C}}", C),  # Minerva 86
    (r"\boxed{f(3) = 5}", "5", C),                                 # a function value on the left is a label
    (r"\boxed{f(3) = 5}", "3", W),
    (r"\boxed{\frac{dM}{dt} = \frac{10^5 L_\odot}{0.007 c^2 M_\odot^6} M^7}",  # Minerva 27: M is a factor, no unit
     r"\frac{dM}{dt}=\frac{10^{5} L_{\odot}}{0.007 c^{2} M_{\odot}^{6}} M^{6}", W),
    (r"\boxed{\frac{dM}{dt} = \frac{10^5 L_\odot}{0.007 c^2 M_\odot^6} M^6}",
     r"\frac{dM}{dt}=\frac{10^{5} L_{\odot}}{0.007 c^{2} M_{\odot}^{6}} M^{6}", C),
    (r"\boxed{\frac12}", r"\frac{1}{2} m v^2", W),                # "m v^2" is maths, not a unit
    (r"\boxed{\frac{37}{4}}", r"\frac{37}{4} m", C),               # Minerva 104: after a number, m is metres
    (r"\boxed{0.5 M}", "0.5", C),                                 # ... and M molar
    (r"\boxed{5 \text{ thousand}}", "5", W),                       # scale words multiply
    (r"\boxed{5 \text{ thousand}}", "5000", C),
    (r"\boxed{2.5 million}", "2500000", C),
    (r"\boxed{2.5 million}", "2530000", W),
    (r"\boxed{3 \text{ dozen}}", "36", C),
    (r"\boxed{3 \text{ dozen}}", "3", W),
    (r"\boxed{3 \text{ squared}}", "3", W),                        # words that change the value are no units
    (r"\boxed{2 \text{ thirds}}", "2", W),
    (r"\boxed{111111111}", r"111, \! 111, \! 111", C),             # MATH test/prealgebra/1418: `, \!` is TeX's
    (r"\boxed{111}", r"111, \! 111, \! 111", W),                   # thousands separator, with spaces too
    (r"\boxed{\frac{12}{5525}}", r"\frac{12}{5,\!525}", C),       # MATH test/c&p/861: inside a fraction
    (r"\boxed{\frac{12}{5255}}", r"\frac{12}{5,\!525}", W),
    (r"\boxed{70, 110}", "70,110", C),                             # MATH test/precalculus/528 ("separated by
    (r"\boxed{110, 70}", "70,110", C),                             # commas"): a bare 70,110 may be a list
    (r"\boxed{70}", "70,110", W),
    (r"\boxed{70110}", "70,110", C),                               # ... or a number (GSM8K's 1,080)
    (r"\boxed{1, 80}", "1,080", W),                                # a group with a leading 0 is no list item
]


@pytest.mark.parametrize("completion,gold,expected", CASES)
def test_written_case(completion, gold, expected):
    r = grade(completion, gold)
    assert r.status == expected, r
    assert r.reward == (1.0 if expected == C else 0.0)


def test_case_count_and_balance():
    statuses = [e for _, _, e in CASES]
    assert len(CASES) >= 80 and statuses.count(C) >= 30 and statuses.count(W) >= 30 and statuses.count(N) >= 5


def test_extract_answer_contract():
    assert extract_answer(r"a \boxed{x^{2}} b") == "x^{2}"
    assert extract_answer(r"\boxed{\{1,2\}}") == r"\{1,2\}"           # escaped braces do not count
    assert extract_answer(r"\boxed{1}, \boxed{-2}") == "1, -2"
    assert extract_answer(r"\boxed{1}. Check: 2+2=4, so \boxed{-2}") == "-2"
    assert extract_answer("no answer here, just 42") is None
    assert extract_answer(None) is None
    assert extract_answer("The final answer is $\\frac{1}{2}$. I hope it is correct.") == "\\frac{1}{2}"
    assert extract_answer("the answer is $12") is None                 # unterminated math
    assert extract_answer("#### 1,080\n") == "1,080"


def test_gold_answer_shapes():
    assert gold_answer("Natalia sold 48/2 = 24 clips.\n#### 72") == "72"
    assert gold_answer("so $\\boxed{3}$ then $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"  # MATH: last box
    assert gold_answer("025") == "025"
    assert gold_answer(27.0) == "27" and gold_answer(0.5) == "0.5" and gold_answer(7) == "7"
    assert gold_answer(["$\\frac{1}{2}$"]) == "\\frac{1}{2}"
    assert gold_answer(["$69$,$84$"]) == "69,84"
    assert gold_answer("4.5e33") == "4.5e33"
    assert gold_answer(r"\$32,\!348") == r"\$32,\!348"              # a plain string is unchanged
    assert gold_answer({"answer": "#### 5"}) == "5"
    assert gold_answer(None) is None and gold_answer(float("nan")) is None and gold_answer([]) is None
    assert gold_answer("no box: \\boxed{}") is None
    assert gold_answer("are $\\boxed{-2}$ and $\\boxed{1}$.") == "-2, 1"          # adjacent boxes: one list
    assert gold_answer("$\\boxed{3}$ or $\\boxed{\\frac{2}{5}}$.") == "3, \\frac{2}{5}"
    assert gold_answer("$\\boxed{x+11}$ or $\\boxed{11+x}$.") == "11+x"          # one answer written twice
    assert gold_answer("$\\boxed{(1,2)}$ and $\\boxed{(3,4)}$ (either one is acceptable)") == "(3,4)"
    assert gold_answer("so \\boxed{12") is None
    with pytest.raises(ValueError):
        gold_answer(object())
    for empty in ("", "  ", None, []):
        with pytest.raises(ValueError):
            grade("\\boxed{1}", empty)
    for no_answer_field in ({"question": "q"}, {"answer": ""}, [None]):
        with pytest.raises(ValueError):
            grade("\\boxed{1}", no_answer_field)                              # a schema error: every reward 0
    assert grade("\\boxed{1}", "so \\boxed{12").status == W                  # malformed, not empty: no raise
    assert grade("\\boxed{12}", {"solution": "so \\boxed{12"}).status == W


def test_result_fields():
    r = grade(r"so the answer is $\boxed{\dfrac{14}{3}}$.", r"\frac{14}{3}")
    assert isinstance(r, Result) and r.reward == 1.0 and r.status == C
    assert r.extracted == r"\dfrac{14}{3}" and r.pred == r.gold == r"\frac{14}{3}"
    r = grade("no idea", "5")
    assert (r.reward, r.status, r.extracted, r.pred, r.gold) == (0.0, N, None, None, "5")
    assert R.reward(r"\boxed{5}", "5") == 1.0 and R.reward(r"\boxed{6}", "5") == 0.0


# ---------------------------------------------------------------------------------------------------------
# real data

def _load(name):
    path = DATA / name / "test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return [json.loads(line) for line in path.open()]


def test_math500_solutions_and_echo():
    rows = _load("math500")
    assert len(rows) == 500
    assert sum(grade(r["solution"], r["answer"]).status == C for r in rows) == 500
    assert sum(grade("\\boxed{%s}" % r["answer"], r["answer"]).status == C for r in rows) == 500


def test_math500_negatives():
    rows = _load("math500")
    hits = [(i, rows[i]["answer"], rows[(i + 1) % 500]["answer"]) for i in range(500)
            if grade("\\boxed{%s}" % rows[i]["answer"], rows[(i + 1) % 500]["answer"]).status == C]
    # verified by hand: the only neighbouring golds that are truly equal
    assert hits == [(22, "5", "x=5"), (186, "7", "7"), (403, "3", "3")]


def test_gsm8k_answers():
    rows = _load("gsm8k")
    assert len(rows) == 1319
    assert sum(grade(r["answer"], r["answer"]).status == C for r in rows) == 1319
    boxed = ["\\boxed{%s}" % gold_answer(r["answer"]).replace(",", "") for r in rows]
    assert sum(grade(b, r["answer"]).status == C for b, r in zip(boxed, rows)) == 1319


# Issue 11, item 2: every MATH gold that changes when a solution's adjacent boxes are read as one list answer
# (computed from math/{test,train}.jsonl below; MATH-500 has none: see test_math500_golds_unchanged). The new
# gold of each was checked by hand against its problem: all eight ask for all solutions / values / points.
MULTIBOX_GOLDS = {
    "test/algebra/1878.json": "-2, 1",                             # "Find all solutions", was "1"
    "test/intermediate_algebra/225.json": r"3, \frac{2}{5}",         # "Enter all the solutions", was 2/5
    "test/precalculus/679.json": r"\frac{\pi}{4}, \frac{5\pi}{4}",    # "Enter all the real solutions"
    "train/algebra/152.json": "(-2,18), (8,38)",                   # "Find all points where they intersect"
    "train/algebra/1771.json": "(-2, 23), (0, 1)",                 # "Give all points where they intersect"
    "train/intermediate_algebra/1964.json": "1, 9",                # "Enter all possible values"
    "train/precalculus/860.json": r"\frac{3}{2}, -3",                # "List all possible values"
    "train/precalculus/1149.json": r"30^\circ, 150^\circ",           # "find all possible values of theta"
}
# Several adjacent boxes that keep the last one: alternatives the solution names ("Enter only one of the
# foci, not both"; "(Either point is an acceptable answer.)"), and one answer boxed in two forms.
LAST_BOX_KEPT = {
    "test/intermediate_algebra/25.json": "(0,0)",
    "test/intermediate_algebra/702.json": r"\left(-\tfrac52, -\tfrac52\right)",
    "train/intermediate_algebra/396.json": "(-5, 1)",
    "test/number_theory/459.json": r"\frac{639}{40}",                # 15 39/40 or 639/40 (also in MATH-500)
    "test/prealgebra/224.json": "-34 + 12x",                       # 12x - 34 or -34 + 12x
    "test/prealgebra/1088.json": "11+x",
    "train/prealgebra/452.json": "2 - b",
    "train/number_theory/796.json": "28_9",                        # 28 or 28_9
    "train/number_theory/837.json": r"8\!:\!34 \text{ p.m.}",        # 20:34 or 8:34 p.m.
}


def _load_math():
    for split in ("test", "train"):
        if not (DATA / "math" / f"{split}.jsonl").exists():
            pytest.skip(f"{DATA / 'math'} not present")
    return [json.loads(line) for split in ("test", "train") for line in (DATA / "math" / f"{split}.jsonl").open()]


def test_math_multibox_golds():
    rows = _load_math()
    by_id = {r["unique_id"]: r["solution"] for r in rows}
    changed = {u: gold_answer(sol) for u, sol in by_id.items() if gold_answer(sol) != R._boxed_answer(sol, join=False)}
    assert changed == MULTIBOX_GOLDS
    for u, gold in MULTIBOX_GOLDS.items():
        sol, items = by_id[u], re.split(r",\s*(?![^()]*\))", gold)  # commas outside parentheses
        assert grade("\\boxed{%s}" % gold, sol).status == C
        assert grade("\\boxed{%s}" % ", ".join(reversed(items)), sol).status == C     # a list is a multiset
        assert grade("\\boxed{%s}" % items[-1], sol).status == W                     # the old gold alone
    for u, gold in LAST_BOX_KEPT.items():
        sol = by_id[u]
        assert len(R._boxed_answer(sol).split(", ")) >= 2 and gold_answer(sol) == gold
        assert grade("\\boxed{%s}" % gold, sol).status == C
    for u in ("test/intermediate_algebra/25.json", "train/intermediate_algebra/396.json"):
        assert grade("\\boxed{%s}" % R._boxed_answer(by_id[u]), by_id[u]).status == W  # "not both"


def test_math500_golds_unchanged():
    rows = _load("math500")
    assert [r["unique_id"] for r in rows if gold_answer(r["solution"]) != r["answer"]] == []


def test_math_golds_echo_and_malformed():
    rows = _load_math()
    golds = {r["unique_id"]: gold_answer(r["solution"]) for r in rows}
    empty = sorted(u for u, g in golds.items() if g is None)
    assert empty == ["train/number_theory/7115.json", "train/number_theory/7117.json"]  # `\\boxed{}` in the data
    for u in empty:  # item 8: a malformed gold grades `wrong`, it does not raise
        sol = next(r["solution"] for r in rows if r["unique_id"] == u)
        assert grade(r"\boxed{0}", sol).status == W
    bad = [(u, g) for u, g in golds.items() if g is not None and grade("\\boxed{%s}" % g, g).status != C]
    assert not bad


def test_math_gold_shapes_from_the_issue():
    golds = {r["unique_id"]: gold_answer(r["solution"]) for r in _load_math()}
    tex_commas = [g for g in golds.values() if g and "{,}" in g]          # item 4: 1{,}008{,}016
    assert len(tex_commas) == 9
    for g in tex_commas:
        digits = re.sub(r"\D", "", g)
        assert grade("\\boxed{%s}" % digits, g).status == C
        assert grade("\\boxed{%d}" % (int(digits) + 1000), g).status == W
    worded = {u: g for u, g in golds.items() if g and re.search(r"\\text\{\s*,?\s*(?:and|or)\s*\}", g)}  # item 5
    assert sorted(u for u, g in worded.items() if "," in g) == [
        "test/precalculus/870.json", "train/algebra/1055.json", "train/algebra/1642.json"]
    assert len(worded) == 7
    for g in worded.values():
        items = [x.strip() for x in re.split(r"\\text\{[^}]*\}|,", g) if x.strip()]
        assert len(items) >= 2
        assert grade("\\boxed{%s}" % ", ".join(reversed(items)), g).status == C
        assert grade("\\boxed{%s}" % ", ".join(items[:-1]), g).status == W
    g = golds["train/algebra/1087.json"]                                       # item 7
    assert g == r"-80\leq g(x)\leq 82"
    assert grade(r"\boxed{[-80, 82]}", g).status == C and grade(r"\boxed{[-80, 81]}", g).status == W
    g = golds["train/counting_and_probability/360.json"]                       # item 6 in a gold
    assert grade(r"\boxed{\frac23}", g).status == C and grade(r"\boxed{0.67}", g).status == C
    assert grade(r"\boxed{0.6}", g).status == W


def test_tex_thousands_golds_and_review_finds():
    """Every MATH gold with TeX's thousands separator (`{,}`, `,\\!`, `, \\!`) equals its plain digits, also inside
    a fraction (four were misread before the review of issue 11: three fractions with a list as denominator, and
    111, \\! 111, \\! 111 as three items); and the other golds that review found misread."""
    golds = {r["unique_id"]: gold_answer(r["solution"]) for r in _load_math()}
    tex = {u: g for u, g in golds.items() if g and re.search(r"\d(?:\{,\}|,\s*\\!\s*)\d{3}", g)}
    assert len(tex) == 91
    bad = [(u, g) for u, g in tex.items()
           if grade("\\boxed{%s}" % re.sub(r"\{,\}|,\s*\\!\s*", "", g), g).status != C]
    assert not bad
    for u, pred in (("test/prealgebra/1418.json", "111111111"), ("test/counting_and_probability/861.json",
                    r"\frac{12}{5525}"), ("train/counting_and_probability/251.json", r"\frac{1}{29322216}"),
                    ("train/number_theory/794.json", "0.12345")):
        assert grade(r"\boxed{%s}" % pred, golds[u]).status == C
        assert grade(r"\boxed{%s}" % pred.replace("1", "7", 1), golds[u]).status == W
    g = golds["test/precalculus/528.json"]                        # "Enter all the solutions, separated by commas"
    assert g == "70,110" and grade(r"\boxed{110, 70}", g).status == C and grade(r"\boxed{70}", g).status == W
    minerva = [gold_answer(r["solution"]) for r in _load("minerva_math")]
    assert minerva[61] == "I(0)" and grade(r"\boxed{I(0) e^{-t/(RC)}}", minerva[61]).status == W
    assert grade(r"\boxed{I(0) e^{-t/(RC)}}", minerva[86]).status == C
    assert grade(r"\boxed{%s}" % minerva[27], minerva[27]).status == C                      # M^{6} is maths
    assert grade(r"\boxed{%s}" % minerva[27].replace("M^{6}", "M^{5}"), minerva[27]).status == W
    assert minerva[17] == "0.01" and grade(r"\boxed{0.005}", minerva[17]).status == W     # a tie


def test_data_loader_uses_the_new_golds():
    import data
    if not all((DATA / "math" / f"{split}.jsonl").exists() for split in ("test", "train")):
        pytest.skip(f"{DATA / 'math'} not present")
    rows = {r["id"]: r["gold"] for r in data.load_rows("math", "test", data_dir=str(DATA))}
    assert len(rows) == 5000 and rows["test/algebra/1878.json"] == "-2, 1"
    assert grade(r"The solutions are $\boxed{-2}$ and $\boxed{1}$.", rows["test/algebra/1878.json"]).status == C
    assert grade(r"\boxed{1}", rows["test/algebra/1878.json"]).status == W
    train = data.load_rows("math", "train", data_dir=str(DATA))
    assert len(train) == 7498  # the two empty-box golds are skipped


@pytest.mark.parametrize("name,key", [("aime24", "answer"), ("amc23", "answer"), ("olympiadbench", "final_answer"),
                                      ("minerva_math", "solution")])
def test_gold_echo(name, key):
    rows = _load(name)
    bad = [r[key] for r in rows if grade("\\boxed{%s}" % gold_answer(r[key]), r[key]).status != C]
    assert not bad


# ---------------------------------------------------------------------------------------------------------
# safety

@pytest.mark.parametrize("payload", [
    "__import__('os').system('touch {p}')",
    "lambda: 0",
    "().__class__.__bases__[0].__subclasses__()",
    "open('{p}', 'w').write('x')",
    "exec(\"open('{p}','w')\")",
    "eval('1+1')",
    "x = __import__('os').system('touch {p}')",
    r"\input{{/etc/passwd}}",
    "{{{{config.__class__.__init__.__globals__}}}}",
])
def test_injection_is_inert(payload, tmp_path):
    p = tmp_path / "pwned"
    text = "\\boxed{" + payload.format(p=p) + "}"
    for gold in ("0", "2", "x", "lambda: 0", "os"):
        r = grade(text, gold)
        assert r.status in (W, N) or r.pred == r.gold, r  # only the identical text can match
    assert not p.exists()


def test_refuses_towers_quickly():
    t = time.perf_counter()
    assert grade(r"\boxed{9^{9^{9^{9}}}}", "5").status == W
    assert grade(r"\boxed{9^{9^{9^{9}}}}", r"9^{9^{9^{9}}}").status == C   # identical text only
    assert grade(r"\boxed{10^{10^{10}}}", "10^{10^{9}}").status == W
    assert grade(r"\boxed{(10^{10})!}", "1").status == W
    assert grade(r"\boxed{x^{9^{9^{9}}}}", "x^{9^{9^{9}}+1}").status == W
    assert time.perf_counter() - t < 1.0


def test_symbolic_timeout_kills_and_recovers(monkeypatch):
    assert grade(r"\boxed{(x+1)^2}", "x^2+2x+1").status == C     # the worker is up
    slow = (r"\boxed{\sin^{6} u + \cos^{6} u}", r"1 - 3\sin^2 u \cos^2 u")   # sympy needs ~20 ms for this one
    monkeypatch.setattr(R, "SYMBOLIC_TIMEOUT_S", 0.001)
    t = time.perf_counter()
    assert grade(*slow).status == W                      # a timeout is `wrong` ...
    assert time.perf_counter() - t < 1.0
    monkeypatch.undo()
    assert grade(*slow).status == C                      # ... and a fresh worker took over


def test_symbolic_from_threads():
    pairs = [(r"\boxed{(x+%d)^2}" % k, "x^2 + %dx + %d" % (2 * k, k * k)) for k in range(1, 9)]
    with ThreadPoolExecutor(4) as ex:
        statuses = list(ex.map(lambda p: grade(*p).status, pairs))
    assert statuses == [C] * 8
    assert grade(r"\boxed{(x+1)^2}", "x^2 + 2x + 2").status == W


def _grade_in_child(_):
    return grade(r"\boxed{(a+b)^2}", "a^2 + 2ab + b^2").status


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_symbolic_in_forked_worker():
    grade(r"\boxed{(x+1)^2}", "x^2+2x+1")                # the parent owns a sympy worker ...
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.map(_grade_in_child, [0]) == [C]      # ... and a forked child starts its own


# --- the time budget of one grade() call (GRADE_BUDGET_S): chains of proofs, waits for the worker

FAKE_WORKER = """
import sys, time
time.sleep(float(sys.argv[1]))
print("ready", flush=True)
for line in sys.stdin:
    time.sleep(float(sys.argv[2]))
    print("true", flush=True)
"""


@pytest.fixture
def fake_worker(monkeypatch):
    """use(start, proof): from now on the sympy worker is a stub that is ready `start` s after it is started and
    answers every request `true` after `proof` s: slow proofs that succeed, so that only the budget can stop a
    chain of them (every pair below is a true identity)."""
    def use(start=0.0, proof=0.0):
        R._kill_worker()
        monkeypatch.setattr(R, "_worker_argv", lambda: [sys.executable, "-c", FAKE_WORKER, str(start), str(proof)])
    yield use
    R._kill_worker()
    R._spawned_in = None  # the next symbolic grade starts a real worker, as a process's first (not charged)


PROOF_S, BUDGET_S, SLACK_S = 0.05, 0.08, 0.2  # the budget has room for one stub proof, not two
CHAINS = [  # (completion, gold, proofs the comparison makes in series)
    (r"\boxed{1+x, 2+x, 3+x, 4+x, 5+x, 6+x}", "x+1, x+2, x+3, x+4, x+5, x+6", 6),                  # multiset
    (r"\boxed{\begin{pmatrix} 1+x & 2+x & 3+x \\ 4+x & 5+x & 6+x \end{pmatrix}}",
     r"\begin{pmatrix} x+1 & x+2 & x+3 \\ x+4 & x+5 & x+6 \end{pmatrix}", 6),                        # matrix
    (r"\boxed{[1+x, 2+x] \cup [3+x, 4+x] \cup (5+x, 6+x]}", r"[x+1, x+2] \cup [x+3, x+4] \cup (x+5, x+6]", 6),
    (r"\boxed{y+x=1, y+x=2, y+x=3, y+x=4}", "x+y=1, x+y=2, x+y=3, x+y=4", 4),                       # equations
    (r"\boxed{x+1}, \boxed{x+1}, \boxed{x+1}, \boxed{1+x}", "x+1", 4),                              # written twice
    (r"\boxed{x+1}", r"\boxed{1+x} or \boxed{2+x-1} or \boxed{3+x-2} or \boxed{x+1}", 3),         # ... in a gold
]


def test_budget_stops_chains_of_proofs(fake_worker, monkeypatch):
    fake_worker(proof=PROOF_S)
    budget = R.GRADE_BUDGET_S
    for completion, gold, n in CHAINS:
        monkeypatch.setattr(R, "GRADE_BUDGET_S", budget)
        assert grade(r"\boxed{2+x}", "x+2").status == C       # one slow proof fits (and the stub is up)
        monkeypatch.setattr(R, "GRADE_BUDGET_S", BUDGET_S)    # without a budget: n * PROOF_S and `correct`
        t = time.perf_counter()
        r = grade(completion, gold)
        elapsed = time.perf_counter() - t
        assert r.status == W and elapsed < BUDGET_S + SLACK_S, (completion, r, elapsed, n * PROOF_S)


def test_budget_with_real_sympy(monkeypatch):
    """tan(u+v) against its addition formula is true but takes sympy more than SYMBOLIC_TIMEOUT_S: each pair
    was a 2 s timeout plus a worker restart, so a list of them cost n of those (10 items: ~25 s)."""
    assert grade(r"\boxed{(x+1)^2, (x-1)^2}", "x^2-2x+1, x^2+2x+1").status == C   # ordinary symbolic cases
    assert grade(r"\boxed{\left(\frac{x}{2}, x^2-1\right)}", r"(x/2, (x-1)(x+1))").status == C
    assert grade(r"\boxed{y = 2x+1}", "2x - y + 1 = 0").status == C
    f = r"\frac{\tan u + \tan v}{1 - \tan u \tan v}"
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 0.3)
    t = time.perf_counter()
    r = grade(r"\boxed{%s}" % ", ".join([f] * 10), r"\tan(u+v), " + ", ".join(map(str, range(1, 10))))
    assert r.status == W and time.perf_counter() - t < 0.3 + SLACK_S


def test_budget_covers_exact_arithmetic(monkeypatch):
    """No sympy at all: 44 binomials of ~100,000-bit values (each ~0.1 s on CPython 3.11, each within the size
    caps) in one 923-character answer took 4.6 s against the gold 5."""
    huge = "+".join(r"\binom{99999}{%d}" % (49999 - k) for k in range(44))
    assert grade(r"\boxed{(x+1)^2}", "x^2+2x+1").status == C  # a worker restarted by an earlier test has started
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 0.1)             # (its import of sympy competes for the CPU)
    for pred, gold in ((huge, "5"), ("x = %s = 3" % huge, "3")):  # the second is evaluated by the parser
        t = time.perf_counter()
        assert grade(r"\boxed{%s}" % pred, gold).status == W
        assert time.perf_counter() - t < 0.1 + SLACK_S + 0.15  # + the one binomial under way


def test_budget_covers_waiting_for_the_worker(monkeypatch):
    assert grade(r"\boxed{(x+1)^2}", "x^2+2x+1").status == C
    held, done = threading.Event(), threading.Event()

    def hold():  # another thread's long proof holds the worker
        with R._worker_lock:
            held.set()
            done.wait(3.0)

    th = threading.Thread(target=hold)
    th.start()
    held.wait()
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 0.1)
    t = time.perf_counter()
    r = grade(r"\boxed{(x+2)^2}", "x^2+4x+4")
    elapsed = time.perf_counter() - t
    done.set()
    th.join()
    assert r.status == W and elapsed < 0.1 + SLACK_S, (r, elapsed)


def test_budget_covers_a_restarting_worker(fake_worker, monkeypatch):
    fake_worker(start=0.25)
    R._spawned_in = os.getpid()                          # a restart (after a timeout): its start is charged
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 0.1)
    t = time.perf_counter()
    assert grade(r"\boxed{1+x}", "x+1").status == W
    assert time.perf_counter() - t < 0.1 + SLACK_S
    pid = R._worker.proc.pid                             # still starting: it is not killed ...
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 5.0)
    assert grade(r"\boxed{1+x}", "x+1").status == C and R._worker.proc.pid == pid   # ... the next grade uses it
    fake_worker(start=0.15)
    R._spawned_in = None                                 # a process's first worker: its start is not charged
    monkeypatch.setattr(R, "GRADE_BUDGET_S", 0.1)
    assert grade(r"\boxed{2+x}", "x+2").status == C


def _random_strings(n, seed=0):
    """Random and adversarial strings: token soup, unicode, deep nesting, towers, huge inputs."""
    rng = random.Random(seed)
    toks = [r"\frac", r"\sqrt", "{", "}", "(", ")", "[", "]", "^", "_", "x", "y", "2", "9", "0", ".", ",", "-", "+",
            r"\pm", r"\cdot", r"\pi", "e", "i", "!", "=", r"\le", r"\in", r"\cup", r"\infty", "|", r"\{", r"\}",
            r"\sin", r"\log", r"\text{cm}", r"\%", "$", r"\begin{pmatrix}", r"\end{pmatrix}", "&", r"\\",
            r"\boxed{", "####", " ", "\n", r"\left(", r"\right)", r"\binom", r"\lfloor", r"\rfloor", r"\dfrac",
            "1,000", "e5", "\u00e9", "\u221e", "\u221a", "\x00", "'", r"\mathrm{e}", "the answer is ", "Final Answer: ",
            "\\", "%", "#"]
    out = []
    for k in range(n):
        kind = k % 10
        if kind < 5:
            s = "".join(rng.choice(toks) for _ in range(rng.randint(1, 60)))
        elif kind == 5:
            s = "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(1, 200)))
        elif kind == 6:
            d = rng.randint(1, 3000)
            s = rng.choice(["{" * d + "1" + "}" * d, "(" * d + "x", r"\sqrt{" * d + "2", "2^{" * d + "9" + "}" * d,
                            "x^" * d + "2", "-" * d + "1", "1+" * d + "1", r"\frac{1}{" * d])
        elif kind == 7:
            s = rng.choice([r"9^{9^{9^{9}}}", r"10^{10^{10}}", r"(10^{10})!", r"\sin(10^{100})", r"e^{10^{10}}",
                            r"\binom{10^9}{5}", "1e9999", "9" * 999, r"x^{x^{x^{x}}}", r"\sqrt[10^9]{2}",
                            r"(x+y+z)^{200}", r"2^{2^{2^{2^{2^{2}}}}}", r"\lfloor 10^{1000} \rfloor"])
        elif kind == 8:
            s = rng.choice(["a", "1 ", r"\boxed{", "{", "$", "x+"]) * rng.randint(1000, 50_000)
        else:
            s = "".join(rng.choice(toks) for _ in range(rng.randint(1, 30)))
        if k % 100 == 0:
            s = s * max(1, 100_000 // max(1, len(s)))  # some 100k-character inputs
        out.append(s if k % 3 else "\\boxed{" + s + "}")
    return out


def test_property_never_raises_and_is_fast():
    golds = ["5", r"\frac{1}{2}", "x^2+1", "(1,2)", "[0,1)", r"2\sqrt{3}", "y = 2x+1", r"1 \pm \sqrt 2", "4.5e33",
             r"\text{(C)}", r"9^{9^{9^{9}}}"]
    strings = _random_strings(2000)
    assert len(strings) == 2000 and max(map(len, strings)) >= 100_000
    worst = 0.0
    for k, s in enumerate(strings):
        t = time.perf_counter()
        r = grade(s, golds[k % len(golds)])
        worst = max(worst, time.perf_counter() - t)
        assert r.status in (C, W, N) and r.reward in (0.0, 1.0)
        assert isinstance(extract_answer(s), (str, type(None)))
    assert worst < 1.0, worst
