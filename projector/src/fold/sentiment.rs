//! Comment sentiment: a deterministic lexicon scorer that runs offline.
//!
//! Each word found in the lexicon adds its weight; an intensifier just before
//! it ("very good") multiplies it by 1.5, a negation within the three words
//! before it ("not that good") flips it, and emoji and emoticons count like
//! words. The score is the sum squashed into -1000..=1000, so replaying a
//! comment always gives the same number.

/// Words and symbols with their weight (positive or negative).
const LEXICON: &[(&str, i32)] = &[
    // Positive.
    ("love", 3),
    ("loved", 3),
    ("loving", 3),
    ("adore", 3),
    ("amazing", 3),
    ("awesome", 3),
    ("excellent", 3),
    ("fantastic", 3),
    ("brilliant", 3),
    ("perfect", 3),
    ("incredible", 3),
    ("stunning", 3),
    ("beautiful", 2),
    ("gorgeous", 2),
    ("great", 2),
    ("good", 2),
    ("nice", 2),
    ("cool", 1),
    ("like", 1),
    ("wow", 2),
    ("fun", 2),
    ("funny", 1),
    ("happy", 2),
    ("glad", 2),
    ("best", 3),
    ("recommend", 2),
    ("helpful", 2),
    ("thanks", 1),
    ("thank", 1),
    ("cute", 2),
    ("inspiring", 2),
    ("genius", 2),
    ("fire", 1),
    ("wonderful", 3),
    ("enjoyed", 2),
    ("enjoy", 2),
    ("yes", 1),
    ("❤", 3),
    ("❤️", 3),
    ("😍", 3),
    ("🔥", 2),
    ("👍", 2),
    ("😂", 1),
    ("🙌", 2),
    ("😊", 2),
    (":)", 2),
    (":-)", 2),
    (":d", 2),
    ("<3", 3),
    // Negative.
    ("hate", -3),
    ("hated", -3),
    ("awful", -3),
    ("terrible", -3),
    ("horrible", -3),
    ("worst", -3),
    ("disgusting", -3),
    ("scam", -3),
    ("fake", -2),
    ("bad", -2),
    ("poor", -2),
    ("ugly", -2),
    ("boring", -2),
    ("annoying", -2),
    ("disappointed", -2),
    ("disappointing", -2),
    ("useless", -2),
    ("waste", -2),
    ("stupid", -2),
    ("sad", -1),
    ("meh", -1),
    ("overpriced", -2),
    ("broken", -2),
    ("spam", -2),
    ("unfollow", -2),
    ("cringe", -2),
    ("no", -1),
    ("👎", -2),
    ("😡", -3),
    ("🤮", -3),
    ("😒", -2),
    ("😢", -1),
    (":(", -2),
    (":-(", -2),
];

/// Words that flip the sentiment of what follows within three words.
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "don't", "dont", "doesn't", "doesnt", "isn't", "isnt", "wasn't", "wasnt",
    "aren't", "arent", "didn't", "didnt", "can't", "cant", "won't", "wont", "nothing", "hardly",
];

/// Words that strengthen the next sentiment word.
const INTENSIFIERS: &[&str] = &[
    "very",
    "really",
    "so",
    "super",
    "extremely",
    "absolutely",
    "totally",
    "too",
    "incredibly",
];

/// A comment's sentiment from -1000 (clearly negative) to 1000 (clearly
/// positive); 0 when no sentiment word is found.
pub fn score(text: &str) -> i16 {
    let tokens = tokens(text);
    let mut total = 0.0f64;
    for (i, token) in tokens.iter().enumerate() {
        let Some(weight) = weight_of_word(token) else {
            continue;
        };
        // "no" alone is a (mild) sentiment word, but before another sentiment
        // word it only negates.
        if NEGATIONS.contains(&token.as_str())
            && tokens[i + 1..]
                .iter()
                .take(3)
                .any(|t| weight_of_word(t).is_some())
        {
            continue;
        }
        let mut value = f64::from(weight);
        if i > 0 && INTENSIFIERS.contains(&tokens[i - 1].as_str()) {
            value *= 1.5;
        }
        let negated = tokens[i.saturating_sub(3)..i]
            .iter()
            .any(|t| NEGATIONS.contains(&t.as_str()));
        if negated {
            value = -value * 0.75;
        }
        total += value;
    }
    // Squash: 3 points is a clear opinion (≈ ±600), more saturates.
    let squashed = total / (total.abs() + 2.0);
    (squashed * 1000.0).round() as i16
}

fn weight_of_word(token: &str) -> Option<i32> {
    LEXICON
        .iter()
        .find(|(word, _)| *word == token)
        .map(|(_, weight)| *weight)
}

/// Lower-cased words (keeping apostrophes) and emoji/emoticons as tokens.
fn tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for chunk in text.split_whitespace() {
        let lower = chunk.to_lowercase();
        // Emoticons are whole chunks.
        if LEXICON.iter().any(|(word, _)| *word == lower)
            && !lower.chars().any(char::is_alphanumeric)
        {
            tokens.push(lower);
            continue;
        }
        let mut word = String::new();
        for c in lower.chars() {
            if c.is_alphanumeric() || c == '\'' || c == '’' {
                word.push(if c == '’' { '\'' } else { c });
            } else {
                if !word.is_empty() {
                    tokens.push(std::mem::take(&mut word));
                }
                if !c.is_ascii() && !c.is_whitespace() && c != '\u{fe0f}' {
                    tokens.push(c.to_string());
                }
            }
        }
        if !word.is_empty() {
            tokens.push(word);
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labelled examples: (comment, expected label).
    const LABELLED: &[(&str, i8)] = &[
        ("I love this!", 1),
        ("Absolutely amazing work 🔥", 1),
        ("so good, thanks for sharing", 1),
        ("This is the best video I've seen this week", 1),
        ("gorgeous colours ❤️", 1),
        ("wow 😍😍", 1),
        ("really helpful, I recommend it", 1),
        ("not bad at all", 1),
        ("Can't hate this", 1),
        ("I hate this", -1),
        ("terrible advice, total scam", -1),
        ("This is so boring", -1),
        ("worst product ever 👎", -1),
        ("not good", -1),
        ("I don't like it", -1),
        ("disappointed :(", -1),
        ("fake and overpriced", -1),
        ("never recommend this", -1),
        ("What time was this filmed?", 0),
        ("first", 0),
        ("link in bio?", 0),
        ("", 0),
        ("ok", 0),
        ("👀", 0),
    ];

    fn label(score: i16) -> i8 {
        match score {
            s if s > 100 => 1,
            s if s < -100 => -1,
            _ => 0,
        }
    }

    #[test]
    fn labelled_examples_are_scored_right() {
        let wrong: Vec<String> = LABELLED
            .iter()
            .filter(|(text, expected)| label(score(text)) != *expected)
            .map(|(text, expected)| {
                format!("{text:?}: expected {expected}, scored {}", score(text))
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn intensifiers_strengthen_and_scores_stay_in_range() {
        assert!(score("very good") > score("good"));
        assert!(score("very bad") < score("bad"));
        let gushing = "love love love amazing perfect best ".repeat(50);
        assert!((900..=1000).contains(&score(&gushing)));
        let ranting = "hate awful worst ".repeat(50);
        assert!((-1000..=-900).contains(&score(&ranting)));
    }

    #[test]
    fn scoring_is_deterministic_and_case_blind() {
        assert_eq!(score("GREAT stuff"), score("great stuff"));
        assert_eq!(score("Great stuff"), score("Great stuff"));
        assert_eq!(score("isn’t good"), score("isn't good"));
    }
}
