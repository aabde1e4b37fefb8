"""The written grading cases: (completion, gold, expected status) for every rule of reward.py, in both
directions. test_reward.py checks each one; bench_reward.py measures math-verify's agreement on them."""

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
